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

test("CUDA is reported unavailable here, with the reason", async (t) => {
  if (process.env.THAW_CUDART) return t.pass("THAW_CUDART is set: not the default probe");
  const info = await cudaInfo();
  if (info.available) return t.pass(`a GPU is present (${info.devices[0]?.name}): nothing to check`);
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

const probe = `const i = await addon.cudaInfo(); console.log(JSON.stringify(i));`;

test("libcudart without a driver (error 35) means no GPU, with a clear message", (t) => {
  const lib = fakeCudart(dir.dir);
  if (lib === undefined) return t.pass("no C compiler");
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

test("zero devices means no GPU", (t) => {
  const lib = fakeCudart(dir.dir);
  if (lib === undefined) return t.pass("no C compiler");
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: lib, THAW_FAKE_CUDA: "nodevice" }));
  t.false(info.available);
  t.is(info.reason, "no usable GPU: cudaGetDeviceCount reported 0 devices");
});

test("a library that lacks a symbol thaw uses is not available, and says which", (t) => {
  const lib = fakeCudart(dir.dir, "missing-symbol");
  if (lib === undefined) return t.pass("no C compiler");
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: lib }));
  t.false(info.available);
  t.is(info.reason, `${lib} lacks cudaIpcOpenMemHandle`);
});

test("a library that is not there", (t) => {
  const info = JSON.parse(runAddonChild(probe, { THAW_CUDART: "/nonexistent/libcudart.so.99" }));
  t.false(info.available);
  t.regex(info.reason, /^CUDA runtime library not found \(tried \/nonexistent\/libcudart\.so\.99\): \/nonexistent\/libcudart\.so\.99: cannot open shared object file/);
});
