// Package kubevirt runs heyvm sandboxes as KubeVirt VirtualMachines.
//
// A sandbox maps onto KubeVirt like this:
//
//   - the image's kernel and initrd boot through
//     spec.domain.firmware.kernelBoot.container, from the same OCI image
//     that carries the root disk (see package containerdisk), and the
//     image's kernel command line becomes kernelArgs with the console moved
//     to the serial port KubeVirt attaches (ttyS0 on amd64, ttyAMA0 on
//     arm64);
//   - the root disk is a DataVolume template (CDI imports the containerDisk
//     image into a PVC, so the disk outlives stops), or with Ephemeral a
//     containerDisk volume whose writes are lost when the VM stops;
//   - provisioning keeps using the serial console (the VMI console
//     subresource) and SSH rides the VMI portforward subresource to port 22;
//   - stop and start set runStrategy to Halted and Always;
//   - sandboxes carry the labels heyvm.dev/sandbox (the id), heyvm.dev/name
//     and heyvm.dev/image, and listing is a label selector.
//
// Nothing of heyvm runs in the cluster and no heyvm process stays running
// locally for a sandbox: the cluster's controllers keep it.
//
// Types come from kubevirt.io/api and kubevirt.io/containerized-data-importer-api;
// the client is k8s.io/client-go's dynamic client, so the user's kubeconfig
// and its auth plugins work as they do for kubectl. Targeted: KubeVirt
// v1.8.4 and CDI v1.64.0 (see TargetKubeVirt and TargetCDI): the module
// pins kubevirt.io/api v1.8.4 and containerized-data-importer-api v1.64.0,
// and the conformance module (internal/kubevirt/conformance) runs the
// generated objects through kubevirt.io/kubevirt v1.8.4's CRD schemas and
// admission code and CDI's DataVolume CRD schema.
package kubevirt

// TargetKubeVirt and TargetCDI are the versions this package's objects are
// checked against (CRD structural schemas and KubeVirt's admission code);
// later releases of the kubevirt.io/v1 and cdi.kubevirt.io/v1beta1 APIs
// accept them too.
const (
	TargetKubeVirt = "v1.8.4"
	TargetCDI      = "v1.64.0"
)
