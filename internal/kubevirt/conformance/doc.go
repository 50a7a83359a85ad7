// Package conformance checks the objects package kubevirt generates
// against KubeVirt's and CDI's own code: the CRD structural schemas the
// API server validates custom resources with (OpenAPI types, unknown-field
// pruning, x-kubernetes-validations CEL rules) and KubeVirt's admission
// webhook validation of VirtualMachine specs; negative controls make sure
// each check can fail.
//
// It is a Go module of its own, so its dependencies never reach heyvm's
// module or binary: kubevirt.io/kubevirt cannot be required without the
// replace directives of its go.mod (it requires kubevirt.io/client-go and
// k8s.io/kubectl at placeholder versions and pins k8s.io/* to v0.34), and
// those would downgrade heyvm's Kubernetes modules.
//
// Versions: kubevirt.io/kubevirt v1.8.4 (with kubevirt.io/api v1.8.4, as
// heyvm's module pins) and the DataVolume CRD of
// kubevirt.io/containerized-data-importer v1.65.0 (v1.64.0's module is not
// in the checksum database; the DataVolume API is the same). KubeVirt
// v1.9.0's admission code cannot be built from the Go module proxy here:
// it needs kubevirt.io/virt-template-api v0.2.0, which the proxy refuses.
//
// Run: cd internal/kubevirt/conformance && go test ./...
// (a cold compile takes about 8 minutes of CPU; go.sum pins every module,
// so no checksum database lookup is needed. Updating go.sum needs
// GONOSUMDB=kubevirt.io/virt-template-api,kubevirt.io/virt-template-client-go,github.com/rhobs/operator-observability-toolkit
// because the checksum database here lacks those versions.)
package conformance
