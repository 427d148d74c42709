// The image catalog: what an image is, which OS it carries and which hypervisors can run it.
// Unknown images are refused at the edge with the list of known ones.
import { invalidArgument } from "../../../../sdk/src/errors.js";
import { HypervisorType } from "../../../../sdk/src/gen/trustplane/vm/v1/vm.js";

export interface ImageInfo {
  name: string;
  os: string;
  description: string;
  hypervisors: HypervisorType[];
}

export const IMAGES: readonly ImageInfo[] = [
  { name: "tiny-linux", os: "linux", description: "Debian kernel + busybox initramfs (QEMU guest)", hypervisors: [HypervisorType.HYPERVISOR_TYPE_QEMU] },
  { name: "process", os: "process", description: "a process VM: one command in its own namespaces", hypervisors: [HypervisorType.HYPERVISOR_TYPE_SANDBOX] },
  { name: "job-runner", os: "process", description: "a secure-job VM: the job runner, with a host channel to the agent's job bridge", hypervisors: [HypervisorType.HYPERVISOR_TYPE_SANDBOX] },
];

export function imageInfo(name: string): ImageInfo {
  const image = IMAGES.find((i) => i.name === name);
  if (!image) throw invalidArgument("image", `unknown image ${JSON.stringify(name)}; known images: ${IMAGES.map((i) => i.name).join(", ")}`, "UNKNOWN_IMAGE");
  return image;
}
