// On a machine without a usable GPU (CI): CUDA is reported unavailable with the reason, and every
// call that needs it fails with CudaUnavailableError, never a crash. The other ways of "no GPU"
// (library without a driver: error 35; zero devices; a symbol missing) are played by the fake
// libcudart in child processes, since the probe runs once per process.
import test from "ava";
import { copyToDevice } from "../../src/native/copier.js";
import { DeviceMemory, cudaInfo, deviceMemory, requireCuda } from "../../src/native/cuda.js";
import { CudaUnavailableError } from "../../src/native/native-error.js";
import { PinnedPool } from "../../src/native/pinned-pool.js";
import { fakeCudart, runAddonChild, tempDir } from "./helpers.js";

const dir = tempDir();
test.after.always(() => dir.cleanup());

// What this machine has decides which tests apply; the others are skipped and counted so.
// (ava wants tests declared synchronously: the default probe runs in a child process.)
const probe = `const i = await addon.cudaInfo(); console.log(JSON.stringify(i));`;
const defaultProbe = process.env.THAW_CUDART ? undefined : (JSON.parse(runAddonChild(probe, {})) as { available: boolean });
const noGpuHere = defaultProbe !== undefined && !defaultProbe.available;
const fake = fakeCudart(dir.dir);
const fakeMissingSymbol = fakeCudart(dir.dir, "missing-symbol");
if (!noGpuHere) process.stderr.write(`cuda-unavailable.test.ts: the no-GPU test is skipped: ${defaultProbe === undefined ? "THAW_CUDART is set" : "a GPU is present"}\n`);
if (fake === undefined) process.stderr.write("cuda-unavailable.test.ts: the fake libcudart tests are skipped: no C compiler (cc)\n");

(noGpuHere ? test : test.skip)("CUDA is reported unavailable here, with the reason", async (t) => {
  const info = await cudaInfo();
  t.false(info.available);
  t.deepEqual(info.devices, []);
  t.regex(info.reason, /CUDA runtime library not found \(tried libcudart\.so\.13, .*\/usr\/local\/cuda\/.*libcudart\.so\): libcudart\.so\.13: cannot open shared object file|no usable GPU: cudaGetDeviceCount failed with cudaErrorInsufficientDriver \(35\)/);
  const err = await t.throwsAsync(requireCuda(), { instanceOf: CudaUnavailableError });
  t.true(err!.message.startsWith("CUDA is not available: "));
  await t.throwsAsync(DeviceMemory.allocate(0, 4096), { instanceOf: CudaUnavailableError });
  await t.throwsAsync(DeviceMemory.openIpc(new Uint8Array(64), { bytes: 4096 }), { instanceOf: CudaUnavailableError });
  await t.throwsAsync(deviceMemory(0), { instanceOf: CudaUnavailableError });
  const pool = await PinnedPool.create({ bytes: 1 << 20 });
  t.teardown(() => pool.dispose());
  t.not(pool.pinning, "cuda");
  const fake = { disposed: false, bytes: 1 << 20 } as unknown as DeviceMemory;
  await t.throwsAsync(copyToDevice(pool.allocate(4096), fake), { instanceOf: CudaUnavailableError });
});

test("argument checks come before the CUDA check", async (t) => {
  await t.throwsAsync(DeviceMemory.openIpc(new Uint8Array(10), { bytes: 4096 }), { instanceOf: RangeError });
  await t.throwsAsync(DeviceMemory.openIpc("x" as never, { bytes: 4096 }), { instanceOf: TypeError });
  await t.throwsAsync(DeviceMemory.allocate(0, 0), { instanceOf: RangeError });
});

(fake ? test : test.skip)("libcudart without a driver (error 35) means no GPU, with a clear message", (t) => {
  const lib = fake!;
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: lib, THAW_FAKE_CUDA: "nodriver" }));
  t.false(info.available);
  t.is(info.library, lib);
  t.is(
    info.reason,
    "no usable GPU: cudaGetDeviceCount failed with cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for CUDA runtime version (no NVIDIA driver is loaded on this machine)",
  );
  // A pool still comes up, pinned with mlock instead.
  const pool = JSON.parse(
    runAddonChild(`const p = await addon.createPool({ bytes: 1 << 20 }); console.log(JSON.stringify(p.info())); p.dispose();`, {
      THAW_CUDART: lib,
      THAW_FAKE_CUDA: "nodriver",
    }),
  );
  t.not(pool.pinning, "cuda");
  t.regex(pool.pinningDetail, /^CUDA is not available \(no usable GPU: cudaGetDeviceCount failed/);
});

(fake ? test : test.skip)("zero devices means no GPU", (t) => {
  const lib = fake!;
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: lib, THAW_FAKE_CUDA: "nodevice" }));
  t.false(info.available);
  t.is(info.reason, "no usable GPU: cudaGetDeviceCount reported 0 devices");
});

(fakeMissingSymbol ? test : test.skip)("a library that lacks a symbol thaw uses is not available, and says which", (t) => {
  const lib = fakeMissingSymbol!;
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: lib }));
  t.false(info.available);
  t.is(info.reason, `${lib} lacks cudaIpcOpenMemHandle`);
});

test("a library that is not there", (t) => {
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: "/nonexistent/libcudart.so.99" }));
  t.false(info.available);
  t.regex(info.reason, /^CUDA runtime library not found \(tried \/nonexistent\/libcudart\.so\.99\): \/nonexistent\/libcudart\.so\.99: cannot open shared object file/);
});
