package kubevirt

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/heyvm/heyvm/internal/kubevirt/containerdisk"
)

func testOptions() Options {
	return Options{
		ID: "0123456789ab", Name: "demo", Namespace: "dev",
		Image: "debian:12", ImageRef: "registry.example:5000/heyvm/debian@sha256:" + strings.Repeat("a", 64),
		Arch: "amd64", KernelCmdline: "console=hvc0 root=/dev/vda rw quiet panic=-1",
		CPUs: 2, MemoryMiB: 1024, RootfsSize: 4 << 30, Running: true,
	}
}

// strictScheme knows exactly the types heyvm generates.
func strictScheme(t *testing.T) *kjson.Serializer {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{kvv1.AddToScheme, cdiv1.AddToScheme, corev1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
}

// decodeStrict encodes obj as YAML (what `heyvm` would show with
// --dry-run) and decodes it back strictly: unknown or duplicate fields
// fail, and the kind must map to want's Go type.
func decodeStrict(t *testing.T, obj runtime.Object, want runtime.Object) []byte {
	t.Helper()
	ser := strictScheme(t)
	var buf bytes.Buffer
	if err := ser.Encode(obj, &buf); err != nil {
		t.Fatal(err)
	}
	got, gvk, err := ser.Decode(buf.Bytes(), nil, want)
	if err != nil {
		t.Fatalf("strict decode of %T: %v\n%s", obj, err, buf.String())
	}
	if got != want {
		t.Fatalf("decoded into %T (%v), not %T", got, gvk, want)
	}
	return buf.Bytes()
}

func TestObjectsDecodeStrictly(t *testing.T) {
	o := testOptions()
	o.Pull = &Credentials{Server: "registry.example:5000", Username: "u", Password: "p"}
	set, err := Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	var vm kvv1.VirtualMachine
	decodeStrict(t, set.VirtualMachine, &vm)
	var dv cdiv1.DataVolume
	decodeStrict(t, set.DataVolume, &dv)
	var sec corev1.Secret
	decodeStrict(t, set.Secret, &sec)

	if *vm.Spec.RunStrategy != kvv1.RunStrategyAlways {
		t.Errorf("runStrategy %s", *vm.Spec.RunStrategy)
	}
	spec := vm.Spec.Template.Spec
	kb := spec.Domain.Firmware.KernelBoot
	if kb.KernelArgs != "console=ttyS0 root=/dev/vda rw quiet panic=-1 heyvm.hostname=demo" {
		t.Errorf("kernelArgs %q", kb.KernelArgs)
	}
	if kb.Container.Image != o.ImageRef || kb.Container.KernelPath != "/boot/vmlinuz" || kb.Container.InitrdPath != "/boot/initrd" || kb.Container.ImagePullSecret != "demo-heyvm-pull" {
		t.Errorf("kernelBoot container %+v", kb.Container)
	}
	if spec.Domain.CPU.Cores != 2 || spec.Domain.Resources.Requests.Memory().String() != "1Gi" {
		t.Errorf("cpu %+v memory %v", spec.Domain.CPU, spec.Domain.Resources.Requests.Memory())
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].DataVolume == nil || spec.Volumes[0].DataVolume.Name != "demo-root" {
		t.Errorf("volumes %+v", spec.Volumes)
	}
	if len(vm.Spec.DataVolumeTemplates) != 1 {
		t.Fatalf("dataVolumeTemplates %+v", vm.Spec.DataVolumeTemplates)
	}
	tmpl := vm.Spec.DataVolumeTemplates[0]
	if u := *tmpl.Spec.Source.Registry.URL; u != "docker://"+o.ImageRef {
		t.Errorf("registry url %s", u)
	}
	if *tmpl.Spec.Source.Registry.SecretRef != "demo-heyvm-pull" {
		t.Errorf("secretRef %v", tmpl.Spec.Source.Registry.SecretRef)
	}
	if q := tmpl.Spec.Storage.Resources.Requests[corev1.ResourceStorage]; q.String() != "4Gi" {
		t.Errorf("disk %s", q.String())
	}
	if spec.Domain.Devices.Interfaces[0].Masquerade == nil || spec.Networks[0].Pod == nil {
		t.Errorf("network %+v %+v", spec.Domain.Devices.Interfaces, spec.Networks)
	}
	if !*spec.Domain.Devices.AutoattachSerialConsole {
		t.Error("no serial console")
	}
	for _, labels := range []map[string]string{vm.Labels, vm.Spec.Template.ObjectMeta.Labels, tmpl.Labels, dv.Labels, sec.Labels} {
		if labels[LabelSandbox] != o.ID || labels[LabelName] != "demo" || labels[LabelImage] != "debian_12" {
			t.Errorf("labels %v", labels)
		}
	}
	if vm.Annotations[AnnotationImage] != "debian:12" || vm.Annotations[AnnotationImageRef] != o.ImageRef {
		t.Errorf("annotations %v", vm.Annotations)
	}

	// The Secret serves kubelet (dockerconfigjson) and CDI (accessKeyId,
	// secretKey).
	if sec.Type != corev1.SecretTypeDockerConfigJson || string(sec.Data["accessKeyId"]) != "u" || string(sec.Data["secretKey"]) != "p" {
		t.Errorf("secret %+v", sec)
	}
	var dc struct {
		Auths map[string]struct{ Username, Password, Auth string }
	}
	if err := json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &dc); err != nil || dc.Auths["registry.example:5000"].Auth != "dTpw" {
		t.Errorf("dockerconfigjson %s (%v)", sec.Data[corev1.DockerConfigJsonKey], err)
	}
}

func TestObjectsEphemeral(t *testing.T) {
	o := testOptions()
	o.Ephemeral, o.Running, o.Arch = true, false, "arm64"
	set, err := Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	if set.DataVolume != nil || set.Secret != nil {
		t.Fatalf("ephemeral sandbox has a DataVolume or Secret: %+v", set)
	}
	var vm kvv1.VirtualMachine
	decodeStrict(t, set.VirtualMachine, &vm)
	if *vm.Spec.RunStrategy != kvv1.RunStrategyHalted || len(vm.Spec.DataVolumeTemplates) != 0 {
		t.Errorf("spec %+v", vm.Spec)
	}
	cd := vm.Spec.Template.Spec.Volumes[0].ContainerDisk
	if cd == nil || cd.Image != o.ImageRef || cd.Path != "/disk/rootfs.qcow2" {
		t.Errorf("containerDisk %+v", cd)
	}
	if got := vm.Spec.Template.Spec.Domain.Firmware.KernelBoot.KernelArgs; !strings.HasPrefix(got, "console=ttyAMA0 ") {
		t.Errorf("arm64 kernelArgs %q", got)
	}
}

func TestKernelArgs(t *testing.T) {
	for _, c := range []struct{ in, arch, want string }{
		{"console=hvc0 root=/dev/vda rw quiet panic=-1", "amd64", "console=ttyS0 root=/dev/vda rw quiet panic=-1 heyvm.hostname=h"},
		{"root=/dev/vda console=tty0 console=hvc0 heyvm.hostname=old", "amd64", "root=/dev/vda console=ttyS0 heyvm.hostname=h"},
		{"root=/dev/vda", "arm64", "console=ttyAMA0 root=/dev/vda heyvm.hostname=h"},
	} {
		if got := KernelArgs(c.in, c.arch, "h"); got != c.want {
			t.Errorf("KernelArgs(%q, %s) = %q, want %q", c.in, c.arch, got, c.want)
		}
	}
}

func TestObjectsRefuseBadOptions(t *testing.T) {
	for _, mod := range []func(*Options){
		func(o *Options) { o.Name = "Not_A_Name" },
		func(o *Options) { o.ImageRef = "" },
		func(o *Options) { o.Arch = "riscv64" },
		func(o *Options) { o.MemoryMiB = 0 },
		func(o *Options) { o.ID = "" },
	} {
		o := testOptions()
		mod(&o)
		if _, err := Objects(o); err == nil {
			t.Errorf("Objects(%+v) accepted", o)
		}
	}
}

func TestDiskSizeAndLabelValue(t *testing.T) {
	o := testOptions()
	o.DiskSizeMiB = 10240
	if q := o.DiskSize(); q.String() != "10Gi" {
		t.Errorf("disk %s", q.String())
	}
	o.DiskSizeMiB = 100 // smaller than the image: the image's size wins
	if q := o.DiskSize(); q.String() != "4Gi" {
		t.Errorf("disk %s", q.String())
	}
	if v := LabelValue("ghcr.io/acme/x:1"); v != "ghcr.io_acme_x_1" {
		t.Errorf("label value %q", v)
	}
	if v := LabelValue(strings.Repeat("a", 70) + ":"); len(v) != 63 {
		t.Errorf("label value length %d", len(v))
	}
}

// The VM looks for the files where containerdisk puts them.
func TestPathsMatchTheContainerDisk(t *testing.T) {
	for vm, img := range map[string]string{KernelPath: containerdisk.KernelPath, InitrdPath: containerdisk.InitrdPath, DiskPath: containerdisk.DiskPath} {
		if vm != "/"+img {
			t.Errorf("the VM uses %s, the image has /%s", vm, img)
		}
	}
}
