// The CUDA side of the loader: what GPUs there are, and GPU memory to copy into — memory the
// engine worker exported with cudaIpcGetMemHandle (the normal case) or memory allocated here.
// libcudart is opened with dlopen on first use; a machine without a GPU gets CudaUnavailableError.
import { nativeBinding, type NativeCudaInfo, type NativeDevice } from "./binding.js";
import { CudaUnavailableError, fromNative } from "./native-error.js";
import { checkOptionalInt, checkPositive, checkUint } from "./validate.js";

export type CudaInfo = NativeCudaInfo;

let info: Promise<CudaInfo> | undefined;

/**
 * Whether CUDA is usable and what devices there are. `available` is true only when libcudart
 * loaded, every symbol thaw uses resolved and cudaGetDeviceCount answered > 0; else `reason`
 * says which of these failed. Probed once per process.
 */
export function cudaInfo(): Promise<CudaInfo> {
  info ??= nativeBinding().cudaInfo();
  return info;
}

/** cudaInfo(), or CudaUnavailableError with the reason. */
export async function requireCuda(): Promise<CudaInfo> {
  const i = await cudaInfo();
  if (!i.available) throw new CudaUnavailableError(`CUDA is not available: ${i.reason}`);
  return i;
}

/** Free and total memory of a device (creates its CUDA context if there is none yet). */
export async function deviceMemory(device = 0): Promise<{ free: number; total: number }> {
  checkOptionalInt(device, "device", 0, 1023);
  await requireCuda();
  try {
    return await nativeBinding().deviceMemory(device);
  } catch (err) {
    throw fromNative(err);
  }
}

export const IPC_HANDLE_BYTES = 64;

/** GPU memory the loader copies into. dispose() closes the IPC mapping (or frees memory allocated here). */
export class DeviceMemory {
  readonly pointer: bigint;
  readonly bytes: number;
  readonly device: number;
  /** Allocated here (true) or opened from another process's IPC handle (false). */
  readonly owned: boolean;
  private native: NativeDevice | undefined;

  private constructor(native: NativeDevice) {
    this.native = native;
    const i = native.info();
    this.pointer = i.pointer;
    this.bytes = i.bytes;
    this.device = i.device;
    this.owned = i.owned;
  }

  /**
   * Opens memory another process exported (thaw.engine.v1.AllocateWeightsResponse: ipc_handle,
   * device_index, bytes). CUDA IPC works between processes only, never inside the exporter.
   */
  static async openIpc(handle: Uint8Array, options: { device?: number; bytes: number }): Promise<DeviceMemory> {
    if (!(handle instanceof Uint8Array)) throw new TypeError("handle must be a Uint8Array");
    if (handle.byteLength !== IPC_HANDLE_BYTES) throw new RangeError(`a CUDA IPC handle has ${IPC_HANDLE_BYTES} bytes, got ${handle.byteLength}`);
    const device = checkOptionalInt(options?.device, "device", 0, 1023) ?? 0;
    checkPositive(options?.bytes, "bytes");
    await requireCuda();
    try {
      return new DeviceMemory(await nativeBinding().openIpc(Uint8Array.from(handle), device, options.bytes));
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** Allocates device memory here (benchmarks, tests, or an agent that owns the GPU memory). */
  static async allocate(device: number, bytes: number): Promise<DeviceMemory> {
    checkOptionalInt(device, "device", 0, 1023);
    checkPositive(bytes, "bytes");
    await requireCuda();
    try {
      return new DeviceMemory(await nativeBinding().allocateDevice(device, bytes));
    } catch (err) {
      throw fromNative(err);
    }
  }

  get disposed(): boolean {
    return this.native === undefined;
  }

  /** The IPC handle (64 bytes) of memory allocated here, for another process to open. */
  exportIpcHandle(): Uint8Array {
    try {
      return this.live().exportIpc();
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** Copies device bytes [offset, offset + target.length) into `target` (checks and tests). */
  async copyToHost(offset: number, target: Uint8Array): Promise<void> {
    checkUint(offset, "offset");
    if (!(target instanceof Uint8Array)) throw new TypeError("target must be a Uint8Array");
    if (offset + target.byteLength > this.bytes) throw new RangeError("range exceeds the device buffer");
    try {
      await this.live().copyToHost(offset, target);
    } catch (err) {
      throw fromNative(err);
    }
  }

  dispose(): void {
    this.native?.dispose();
    this.native = undefined;
  }

  /** @internal */
  nativeDevice(): NativeDevice {
    return this.live();
  }

  private live(): NativeDevice {
    if (this.native === undefined) throw new Error("the device memory has been disposed");
    return this.native;
  }
}
