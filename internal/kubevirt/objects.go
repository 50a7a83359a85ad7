package kubevirt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// Labels every object of a sandbox carries. LabelImage holds the image
// name made fit for a label value (debian:12 becomes debian_12); the exact
// name is in the annotation AnnotationImage.
const (
	LabelSandbox = "heyvm.dev/sandbox"
	LabelName    = "heyvm.dev/name"
	LabelImage   = "heyvm.dev/image"

	AnnotationImage    = "heyvm.dev/image"
	AnnotationImageRef = "heyvm.dev/image-ref"
)

// Paths inside the containerDisk image (see package containerdisk).
const (
	DiskPath   = "/disk/rootfs.qcow2"
	KernelPath = "/boot/vmlinuz"
	InitrdPath = "/boot/initrd"
)

// Names of the parts of the VM spec.
const (
	rootDisk   = "rootdisk"
	podNetwork = "default"
)

// Options are what a sandbox on KubeVirt is made of.
type Options struct {
	// ID is heyvm's sandbox id (12 hex digits), Name the user's name for
	// it, which is also the VM's name and the guest's hostname.
	ID, Name string
	// Namespace is where the objects go ("" leaves it to the caller).
	Namespace string
	// Image is the heyvm image name; ImageRef the registry reference of
	// its containerDisk image (`heyvm images push NAME REF --format
	// kubevirt`), best by digest.
	Image, ImageRef string
	// Arch is the image's architecture (image.yaml arch: amd64 or arm64).
	Arch string
	// KernelCmdline is image.yaml's kernel_cmdline, written for the local
	// backends (console=hvc0); see KernelArgs.
	KernelCmdline string
	CPUs          int
	MemoryMiB     int
	// DiskSizeMiB is the root disk's size; it is never smaller than
	// RootfsSize, the image's rootfs size in bytes (image.yaml).
	DiskSizeMiB int
	RootfsSize  int64
	// Ephemeral boots the containerDisk directly: no DataVolume, no CDI,
	// and the disk's changes are lost when the VM stops.
	Ephemeral bool
	// Running makes the VM start as soon as it is created (runStrategy
	// Always); otherwise it is created Halted.
	Running bool
	// StorageClass for the root disk's PVC ("" is the cluster's default).
	StorageClass string
	// Pull holds credentials for a private registry; nil for a public one.
	Pull *Credentials
	// GracePeriodSeconds is how long KubeVirt waits for the guest to power
	// off on stop before it kills it (0: 30 seconds).
	GracePeriodSeconds int64
}

// Credentials let the nodes (kernelBoot container, containerDisk) and CDI's
// importer pull a private image.
type Credentials struct {
	Server   string // registry host, as in the image ref (ghcr.io, host:5000)
	Username string
	Password string
}

// Set is a sandbox's objects: what Create sends to the cluster.
type Set struct {
	VirtualMachine *kvv1.VirtualMachine
	// Secret holds Pull's credentials, in the forms kubelet and CDI read
	// (nil without credentials).
	Secret *corev1.Secret
	// DataVolume is the DataVolume KubeVirt makes from the VM's template
	// (nil when ephemeral). Create does not send it; it is here so tests and
	// callers can see and check it on its own.
	DataVolume *cdiv1.DataVolume
}

// DataVolumeName and SecretName name a sandbox's other objects.
func DataVolumeName(name string) string { return name + "-root" }
func SecretName(name string) string     { return name + "-heyvm-pull" }

// Labels are the labels of a sandbox's objects.
func Labels(o Options) map[string]string {
	return map[string]string{
		LabelSandbox: o.ID,
		LabelName:    o.Name,
		LabelImage:   LabelValue(o.Image),
	}
}

// LabelValue makes s a valid label value: characters other than
// letters, digits, '-', '_' and '.' become '_', the ends are
// alphanumeric and the length at most 63.
func LabelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	out := string(b)
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.Trim(out, "-_.")
}

func (o Options) validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(o.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("sandbox name %q cannot name a VirtualMachine: %s", o.Name, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsValidLabelValue(o.ID); o.ID == "" || len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("sandbox id %q is not a valid label value", o.ID))
	}
	if o.ImageRef == "" {
		errs = append(errs, errors.New("no containerDisk image ref: push the image with `heyvm images push NAME REF --format kubevirt` and use that REF"))
	}
	if o.Arch != "amd64" && o.Arch != "arm64" {
		errs = append(errs, fmt.Errorf("image architecture %q is not amd64 or arm64", o.Arch))
	}
	if o.CPUs < 1 || o.MemoryMiB < 64 {
		errs = append(errs, fmt.Errorf("a sandbox needs at least 1 CPU and 64 MiB of memory (got %d, %d MiB)", o.CPUs, o.MemoryMiB))
	}
	if o.Pull != nil && (o.Pull.Server == "" || o.Pull.Username == "") {
		errs = append(errs, errors.New("registry credentials need a server and a username"))
	}
	return errors.Join(errs...)
}

// SerialConsole is the kernel's name for the serial port KubeVirt attaches
// as the VM's console on arch.
func SerialConsole(arch string) string {
	if arch == "arm64" {
		return "ttyAMA0"
	}
	return "ttyS0"
}

// KernelArgs turns an image's kernel command line into the VM's
// kernelArgs: every console= goes (KubeVirt has no virtio console, so
// hvc0 would leave the kernel and init without one) and the serial port
// takes its place, where the first one stood; heyvm.hostname names the
// guest, as the local owner does.
func KernelArgs(cmdline, arch, hostname string) string {
	var out []string
	placed := false
	for _, f := range strings.Fields(cmdline) {
		if strings.HasPrefix(f, "console=") {
			if !placed {
				out = append(out, "console="+SerialConsole(arch))
				placed = true
			}
			continue
		}
		if strings.HasPrefix(f, "heyvm.hostname=") {
			continue
		}
		out = append(out, f)
	}
	if !placed {
		out = append([]string{"console=" + SerialConsole(arch)}, out...)
	}
	if hostname != "" {
		out = append(out, "heyvm.hostname="+hostname)
	}
	return strings.Join(out, " ")
}

// DiskSize is the root disk's size: the requested size, at least the
// image's, in whole MiB.
func (o Options) DiskSize() resource.Quantity {
	mib := int64(o.DiskSizeMiB)
	if img := (o.RootfsSize + 1<<20 - 1) >> 20; img > mib {
		mib = img
	}
	if mib <= 0 {
		mib = 4096
	}
	return *resource.NewQuantity(mib<<20, resource.BinarySI)
}

// Objects makes a sandbox's VirtualMachine and, with credentials, its
// pull Secret.
func Objects(o Options) (*Set, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	labels := Labels(o)
	annotations := map[string]string{AnnotationImage: o.Image, AnnotationImageRef: o.ImageRef}
	strategy := kvv1.RunStrategyHalted
	if o.Running {
		strategy = kvv1.RunStrategyAlways
	}
	grace := o.GracePeriodSeconds
	if grace <= 0 {
		grace = 30
	}
	pullSecret := ""
	var secret *corev1.Secret
	if o.Pull != nil {
		var err error
		if secret, err = pullSecretFor(o, labels); err != nil {
			return nil, err
		}
		pullSecret = secret.Name
	}
	memory := *resource.NewQuantity(int64(o.MemoryMiB)<<20, resource.BinarySI)
	yes, no := true, false

	root := kvv1.Volume{Name: rootDisk}
	var dvTemplates []kvv1.DataVolumeTemplateSpec
	var dv *cdiv1.DataVolume
	if o.Ephemeral {
		root.ContainerDisk = &kvv1.ContainerDiskSource{
			Image:           o.ImageRef,
			Path:            DiskPath,
			ImagePullSecret: pullSecret,
		}
	} else {
		url := "docker://" + o.ImageRef
		reg := &cdiv1.DataVolumeSourceRegistry{URL: &url}
		if pullSecret != "" {
			reg.SecretRef = &pullSecret
		}
		storage := &cdiv1.StorageSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: o.DiskSize()},
			},
		}
		if o.StorageClass != "" {
			sc := o.StorageClass
			storage.StorageClassName = &sc
		}
		spec := cdiv1.DataVolumeSpec{Source: &cdiv1.DataVolumeSource{Registry: reg}, Storage: storage}
		meta := metav1.ObjectMeta{Name: DataVolumeName(o.Name), Labels: labels}
		dvTemplates = []kvv1.DataVolumeTemplateSpec{{ObjectMeta: meta, Spec: spec}}
		root.DataVolume = &kvv1.DataVolumeSource{Name: meta.Name}
		dv = &cdiv1.DataVolume{
			TypeMeta:   metav1.TypeMeta{APIVersion: cdiv1.SchemeGroupVersion.String(), Kind: "DataVolume"},
			ObjectMeta: metav1.ObjectMeta{Name: meta.Name, Namespace: o.Namespace, Labels: labels},
			Spec:       *spec.DeepCopy(),
		}
	}

	vm := &kvv1.VirtualMachine{
		TypeMeta: metav1.TypeMeta{APIVersion: kvv1.GroupVersion.String(), Kind: "VirtualMachine"},
		ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, Namespace: o.Namespace,
			Labels: labels, Annotations: annotations,
		},
		Spec: kvv1.VirtualMachineSpec{
			RunStrategy:         &strategy,
			DataVolumeTemplates: dvTemplates,
			Template: &kvv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: kvv1.VirtualMachineInstanceSpec{
					Architecture:                  o.Arch,
					TerminationGracePeriodSeconds: &grace,
					Hostname:                      o.Name,
					Domain: kvv1.DomainSpec{
						CPU: &kvv1.CPU{Cores: uint32(o.CPUs), Sockets: 1, Threads: 1},
						Resources: kvv1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceMemory: memory},
						},
						Firmware: &kvv1.Firmware{KernelBoot: &kvv1.KernelBoot{
							KernelArgs: KernelArgs(o.KernelCmdline, o.Arch, o.Name),
							Container: &kvv1.KernelBootContainer{
								Image:           o.ImageRef,
								ImagePullSecret: pullSecret,
								KernelPath:      KernelPath,
								InitrdPath:      InitrdPath,
							},
						}},
						Devices: kvv1.Devices{
							Disks: []kvv1.Disk{{
								Name:       rootDisk,
								DiskDevice: kvv1.DiskDevice{Disk: &kvv1.DiskTarget{Bus: kvv1.DiskBusVirtio}},
							}},
							Interfaces: []kvv1.Interface{{
								Name:                   podNetwork,
								InterfaceBindingMethod: kvv1.InterfaceBindingMethod{Masquerade: &kvv1.InterfaceMasquerade{}},
							}},
							AutoattachSerialConsole:  &yes,
							AutoattachGraphicsDevice: &no,
							Rng:                      &kvv1.Rng{},
						},
					},
					Networks: []kvv1.Network{{Name: podNetwork, NetworkSource: kvv1.NetworkSource{Pod: &kvv1.PodNetwork{}}}},
					Volumes:  []kvv1.Volume{root},
				},
			},
		},
	}
	return &Set{VirtualMachine: vm, Secret: secret, DataVolume: dv}, nil
}

// pullSecretFor is one Secret in the two forms its readers want: kubelet
// reads .dockerconfigjson (type kubernetes.io/dockerconfigjson), CDI's
// registry importer reads accessKeyId and secretKey.
func pullSecretFor(o Options, labels map[string]string) (*corev1.Secret, error) {
	auth := base64.StdEncoding.EncodeToString([]byte(o.Pull.Username + ":" + o.Pull.Password))
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{
		o.Pull.Server: map[string]string{"username": o.Pull.Username, "password": o.Pull.Password, "auth": auth},
	}})
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: SecretName(o.Name), Namespace: o.Namespace, Labels: labels},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{
			corev1.DockerConfigJsonKey: cfg,
			"accessKeyId":              []byte(o.Pull.Username),
			"secretKey":                []byte(o.Pull.Password),
		},
	}, nil
}
