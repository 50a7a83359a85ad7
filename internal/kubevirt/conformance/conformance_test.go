package conformance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/util/json"
	k8sfield "k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	kvv1 "kubevirt.io/api/core/v1"
	cdiresources "kubevirt.io/containerized-data-importer/pkg/operator/resources"
	"kubevirt.io/kubevirt/pkg/testutils"
	admitters "kubevirt.io/kubevirt/pkg/virt-api/webhooks/validating-webhook/admitters"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"

	hk "github.com/heyvm/heyvm/internal/kubevirt"
)

func options() []hk.Options {
	base := hk.Options{
		ID: "0123456789ab", Name: "demo", Namespace: "dev",
		Image: "debian:12", ImageRef: "registry.example:5000/heyvm/debian@sha256:" + strings.Repeat("a", 64),
		Arch: "amd64", KernelCmdline: "console=hvc0 root=/dev/vda rw quiet panic=-1",
		CPUs: 2, MemoryMiB: 1024, RootfsSize: 4 << 30, Running: true,
		Pull: &hk.Credentials{Server: "registry.example:5000", Username: "u", Password: "p"},
	}
	eph := base
	eph.Ephemeral, eph.Running, eph.Pull, eph.Arch = true, false, nil, "arm64"
	sized := base
	sized.DiskSizeMiB, sized.StorageClass = 20480, "fast"
	return []hk.Options{base, eph, sized}
}

// crdValidator validates objects the way the API server validates a
// custom resource of one CRD version: OpenAPI schema, then pruning (the
// fields the server would drop must be none), then CEL rules.
type crdValidator struct {
	structural *structuralschema.Structural
	schema     validation.SchemaValidator
	cel        *cel.Validator
}

func newCRDValidator(t *testing.T, crd *extv1.CustomResourceDefinition, version string) *crdValidator {
	t.Helper()
	var v1schema *extv1.JSONSchemaProps
	for _, v := range crd.Spec.Versions {
		if v.Name == version && v.Schema != nil {
			v1schema = v.Schema.OpenAPIV3Schema
		}
	}
	if v1schema == nil {
		t.Fatalf("CRD %s has no schema for %s", crd.Name, version)
	}
	var internal apiextensions.JSONSchemaProps
	if err := extv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v1schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatalf("CRD %s: not structural: %v", crd.Name, err)
	}
	if errs := structuralschema.ValidateStructural(nil, s); len(errs) > 0 {
		t.Fatalf("CRD %s: not structural: %v", crd.Name, errs.ToAggregate())
	}
	sv, _, err := validation.NewSchemaValidator(&internal)
	if err != nil {
		t.Fatal(err)
	}
	return &crdValidator{structural: s, schema: sv, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
}

// problems are what the API server would say of obj (as unstructured).
func (v *crdValidator) problems(m map[string]any) []string {
	var out []string
	if errs := validation.ValidateCustomResource(nil, m, v.schema); len(errs) > 0 {
		out = append(out, "OpenAPI schema: "+errs.ToAggregate().Error())
	}
	if pruned := pruning.PruneWithOptions(runtime.DeepCopyJSON(m), v.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(pruned) > 0 {
		out = append(out, "fields the schema does not know (dropped, or refused under strict field validation): "+strings.Join(pruned, ", "))
	}
	if errs, _ := v.cel.Validate(context.Background(), nil, v.structural, m, nil, celconfig.RuntimeCELCostBudget); len(errs) > 0 {
		out = append(out, "x-kubernetes-validations: "+errs.ToAggregate().Error())
	}
	return out
}

func unstructuredOf(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	// As the API server gets it: JSON, numbers as int64 or float64.
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := kjson.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	// Go's encoding writes metadata.creationTimestamp: null; the API
	// server sets that field, heyvm does not send it.
	if md, ok := m["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
		delete(md, "creationTimestamp")
	}
	return m
}

func (v *crdValidator) validate(t *testing.T, obj runtime.Object) {
	t.Helper()
	for _, p := range v.problems(unstructuredOf(t, obj)) {
		t.Errorf("%T: %s", obj, p)
	}
}

func TestVirtualMachineAgainstKubeVirtCRD(t *testing.T) {
	crd, err := components.NewVirtualMachineCrd()
	if err != nil {
		t.Fatal(err)
	}
	v := newCRDValidator(t, crd, "v1")
	for _, o := range options() {
		set, err := hk.Objects(o)
		if err != nil {
			t.Fatal(err)
		}
		v.validate(t, set.VirtualMachine)
	}
}

func TestDataVolumeAgainstCDICRD(t *testing.T) {
	var crd extv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict([]byte(cdiresources.CDICRDs["datavolume"]), &crd); err != nil {
		t.Fatal(err)
	}
	v := newCRDValidator(t, &crd, "v1beta1")
	n := 0
	for _, o := range options() {
		set, err := hk.Objects(o)
		if err != nil {
			t.Fatal(err)
		}
		if set.DataVolume != nil {
			v.validate(t, set.DataVolume)
			n++
		}
	}
	if n == 0 {
		t.Fatal("no DataVolume checked")
	}
}

// TestVirtualMachineAdmission runs KubeVirt's own validating webhook code
// for VirtualMachine specs, with a cluster configured as heyvm's README
// asks (useEmulation for nodes without KVM) and as a default install.
func TestVirtualMachineAdmission(t *testing.T) {
	for _, emulation := range []bool{true, false} {
		kv := &kvv1.KubeVirt{
			ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: "kubevirt"},
			Spec: kvv1.KubeVirtSpec{Configuration: kvv1.KubeVirtConfiguration{
				DeveloperConfiguration: &kvv1.DeveloperConfiguration{UseEmulation: emulation},
			}},
			Status: kvv1.KubeVirtStatus{DefaultArchitecture: "amd64"},
		}
		cfg, _, _ := testutils.NewFakeClusterConfigUsingKV(kv)
		for _, o := range options() {
			set, err := hk.Objects(o)
			if err != nil {
				t.Fatal(err)
			}
			vm := set.VirtualMachine
			causes := admitters.ValidateVirtualMachineSpec(k8sfield.NewPath("spec"), &vm.Spec, cfg, false)
			for _, c := range causes {
				t.Errorf("KubeVirt admission refuses VM %s (%s, ephemeral %v, useEmulation %v): %s: %s", vm.Name, o.Arch, o.Ephemeral, emulation, c.Field, c.Message)
			}
		}
	}
}

// The validators above would pass anything if they were wired wrong: each
// must refuse a VM broken in its own way.
func TestValidatorsRefuseBrokenObjects(t *testing.T) {
	crd, err := components.NewVirtualMachineCrd()
	if err != nil {
		t.Fatal(err)
	}
	v := newCRDValidator(t, crd, "v1")
	set, err := hk.Objects(options()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, want string
		breakIt    func(m map[string]any)
	}{
		{"unknown field", "spec.template.spec.domain.bogus", func(m map[string]any) {
			dig(m, "spec", "template", "spec", "domain")["bogus"] = int64(1)
		}},
		{"wrong type", "OpenAPI schema", func(m map[string]any) { dig(m, "spec")["runStrategy"] = int64(5) }},
		{"CEL rule", "path must be absolute", func(m map[string]any) {
			spec := dig(m, "spec", "template", "spec")
			spec["volumes"] = append(spec["volumes"].([]any), map[string]any{"name": "x", "containerPath": map[string]any{"path": "relative"}})
		}},
	} {
		m := unstructuredOf(t, set.VirtualMachine)
		c.breakIt(m)
		got := strings.Join(v.problems(m), "; ")
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: the CRD validation said %q, want %q", c.name, got, c.want)
		}
	}

	kv := &kvv1.KubeVirt{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: "kubevirt"}}
	cfg, _, _ := testutils.NewFakeClusterConfigUsingKV(kv)
	for _, c := range []struct {
		name, want string
		breakIt    func(vm *kvv1.VirtualMachine)
	}{
		{"relative kernel path", "kernelPath", func(vm *kvv1.VirtualMachine) {
			vm.Spec.Template.Spec.Domain.Firmware.KernelBoot.Container.KernelPath = "boot/vmlinuz"
		}},
		{"kernelArgs without a container", "kernelArgs", func(vm *kvv1.VirtualMachine) {
			vm.Spec.Template.Spec.Domain.Firmware.KernelBoot.Container = nil
		}},
		{"disk without a volume", "rootdisk", func(vm *kvv1.VirtualMachine) {
			vm.Spec.Template.Spec.Volumes[0].Name = "other"
		}},
	} {
		set, _ := hk.Objects(options()[0])
		c.breakIt(set.VirtualMachine)
		causes := admitters.ValidateVirtualMachineSpec(k8sfield.NewPath("spec"), &set.VirtualMachine.Spec, cfg, false)
		var got []string
		for _, cause := range causes {
			got = append(got, cause.Field+": "+cause.Message)
		}
		if !strings.Contains(strings.Join(got, "; "), c.want) {
			t.Errorf("%s: KubeVirt admission said %q, want a cause about %q", c.name, got, c.want)
		}
	}
}

func dig(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}
