// gRPC server reflection (grpc.reflection.v1 and v1alpha) for a connect-node router, so grpcurl and
// `buf curl` can list services, describe them and call them without proto files. The descriptors
// come from the generated code's embedded FileDescriptorProtos (protobuf-es v2), with every
// transitive dependency.
import { toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { ServerReflection as ServerReflectionV1 } from "./gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "./gen/grpc/reflection/v1alpha/reflection_pb.js";

/** The request shape shared by v1 and v1alpha (identical field for field). */
interface ReflectionRequest {
  host: string;
  messageRequest:
    | { case: "fileByFilename"; value: string }
    | { case: "fileContainingSymbol"; value: string }
    | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
    | { case: "allExtensionNumbersOfType"; value: string }
    | { case: "listServices"; value: string }
    | { case: undefined; value?: undefined };
}

/** The response init shape shared by v1 and v1alpha. */
type ReflectionResponseInit = {
  validHost: string;
  originalRequest: ReflectionRequest;
  messageResponse:
    | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
    | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
    | { case: "listServicesResponse"; value: { service: { name: string }[] } }
    | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };
};

/** Files, symbols and extensions of a set of services, answered from their descriptors. */
export class ReflectionIndex {
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  private readonly extensions = new Map<string, Map<number, DescFile>>();
  private readonly encoded = new Map<string, Uint8Array>();
  readonly serviceNames: string[];

  constructor(services: readonly DescService[]) {
    this.serviceNames = [...new Set(services.map((s) => s.typeName))].sort();
    for (const service of services) this.addFile(service.file);
  }

  private addFile(file: DescFile): void {
    // DescFile.name has no ".proto"; reflection speaks of files by their full proto name.
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    for (const dep of file.dependencies) this.addFile(dep);
    for (const message of file.messages) this.addMessage(file, message);
    for (const e of file.enums) this.symbols.set(e.typeName, file);
    for (const ext of file.extensions) this.addExtension(file, ext);
    for (const service of file.services) {
      this.symbols.set(service.typeName, file);
      for (const method of service.methods) this.symbols.set(`${service.typeName}.${method.name}`, file);
    }
  }

  private addMessage(file: DescFile, message: DescFile["messages"][number]): void {
    this.symbols.set(message.typeName, file);
    for (const nested of message.nestedMessages) this.addMessage(file, nested);
    for (const e of message.nestedEnums) this.symbols.set(e.typeName, file);
    for (const ext of message.nestedExtensions) this.addExtension(file, ext);
  }

  private addExtension(file: DescFile, ext: DescFile["extensions"][number]): void {
    this.symbols.set(ext.typeName, file);
    const byNumber = this.extensions.get(ext.extendee.typeName) ?? new Map<number, DescFile>();
    byNumber.set(ext.number, file);
    this.extensions.set(ext.extendee.typeName, byNumber);
  }

  fileByName(name: string): DescFile | undefined {
    return this.files.get(name);
  }

  fileContainingSymbol(symbol: string): DescFile | undefined {
    return this.symbols.get(symbol.replace(/^\./, ""));
  }

  fileContainingExtension(typeName: string, number: number): DescFile | undefined {
    return this.extensions.get(typeName)?.get(number);
  }

  extensionNumbers(typeName: string): number[] | undefined {
    const known = this.extensions.get(typeName);
    if (known) return [...known.keys()].sort((a, b) => a - b);
    return this.symbols.has(typeName) ? [] : undefined;
  }

  /**
   * `file` first (always), then its transitive dependencies, leaving out those already in `sent`
   * on this stream (and adding to it), as grpc-go's reflection does.
   */
  withDependencies(file: DescFile, sent: Set<string>): Uint8Array[] {
    const out: Uint8Array[] = [this.encode(file)];
    sent.add(file.proto.name);
    const visit = (f: DescFile) => {
      for (const dep of f.dependencies) {
        if (sent.has(dep.proto.name)) continue;
        sent.add(dep.proto.name);
        out.push(this.encode(dep));
        visit(dep);
      }
    };
    visit(file);
    return out;
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file.proto.name);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.encoded.set(file.proto.name, bytes);
    }
    return bytes;
  }
}

/** Answers one reflection request (the same logic serves v1 and v1alpha). */
export function answerReflection(index: ReflectionIndex, request: ReflectionRequest, sent: Set<string>): ReflectionResponseInit {
  const base = { validHost: request.host, originalRequest: request };
  const files = (file: DescFile | undefined, what: string): ReflectionResponseInit =>
    file === undefined
      ? { ...base, messageResponse: { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } } }
      : { ...base, messageResponse: { case: "fileDescriptorResponse", value: { fileDescriptorProto: index.withDependencies(file, sent) } } };
  const r = request.messageRequest;
  switch (r.case) {
    case "listServices":
      return { ...base, messageResponse: { case: "listServicesResponse", value: { service: index.serviceNames.map((name) => ({ name })) } } };
    case "fileByFilename":
      return files(index.fileByName(r.value), `file ${r.value}`);
    case "fileContainingSymbol":
      return files(index.fileContainingSymbol(r.value), `symbol ${r.value}`);
    case "fileContainingExtension":
      return files(
        index.fileContainingExtension(r.value.containingType, r.value.extensionNumber),
        `extension ${r.value.extensionNumber} of ${r.value.containingType}`,
      );
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbers(r.value);
      if (numbers === undefined) {
        return { ...base, messageResponse: { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `type ${r.value} not found` } } };
      }
      return { ...base, messageResponse: { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers } } };
    }
    default:
      return { ...base, messageResponse: { case: "errorResponse", value: { errorCode: Code.InvalidArgument, errorMessage: "empty reflection request" } } };
  }
}

/** The reflection services themselves, so a client that lists services sees them too. */
export const REFLECTION_SERVICES: readonly DescService[] = [ServerReflectionV1, ServerReflectionV1Alpha];

/**
 * Registers grpc.reflection.v1 and v1alpha on `router`, describing `services` (and themselves).
 * Reflection is a bidirectional stream, so it needs HTTP/2 (gRPC over h2c, as grpcurl and
 * `buf curl --http2-prior-knowledge` speak it).
 */
export function registerReflection(router: ConnectRouter, services: readonly DescService[]): ReflectionIndex {
  const index = new ReflectionIndex([...services, ...REFLECTION_SERVICES]);
  async function* info(requests: AsyncIterable<ReflectionRequest>) {
    const sent = new Set<string>();
    for await (const request of requests) yield answerReflection(index, request, sent);
  }
  router.service(ServerReflectionV1, { serverReflectionInfo: info });
  router.service(ServerReflectionV1Alpha, { serverReflectionInfo: info });
  return index;
}
