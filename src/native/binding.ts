// Loads the compiled addon (native/build/Release/thaw_native.node) once.
// Only this folder talks to it; everything else uses the typed facades beside this file.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

/** The raw functions the addon exports. Validate arguments before calling these. */
export interface NativeBinding {
  crc32c(data: Uint8Array, crc: number): Promise<number>;
  crc32cSync(data: Uint8Array, crc: number): number;
  crc32cHardware: boolean;
}

const addonPath = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../native/build/Release/thaw_native.node",
);

let binding: NativeBinding | undefined;

export function nativeBinding(): NativeBinding {
  if (binding === undefined) {
    try {
      binding = createRequire(import.meta.url)(addonPath) as NativeBinding;
    } catch (err) {
      throw new Error(
        `thaw's native module is not built (${addonPath}); run \`npm ci\` or \`npx node-gyp rebuild --directory=native\`: ${String(err)}`,
      );
    }
  }
  return binding;
}
