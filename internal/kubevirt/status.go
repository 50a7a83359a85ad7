package kubevirt

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// Sandbox is one sandbox as the cluster sees it.
type Sandbox struct {
	Name, ID  string
	Namespace string
	Image     string // heyvm image name (from the annotation)
	ImageRef  string
	Ephemeral bool
	Created   time.Time
	// State is KubeVirt's printable status of the VM: Stopped,
	// Provisioning, Starting, Running, Stopping, ErrorUnschedulable,
	// ErrImagePull, DataVolumeError, ...
	State string
	// Running: the VM should run (runStrategy is not Halted); Ready: its
	// VMI is running and ready.
	Running, Ready bool
	// Phase is the VMI's phase ("" without a VMI).
	Phase string
	IP    string // the VMI's address on the pod network
	Node  string // the node the VMI runs on
	// Problem says why the sandbox cannot get to running, if KubeVirt
	// reports a reason that waiting will not fix (unschedulable, image
	// pull, disk import failure); nil otherwise.
	Problem error
}

// sandboxFrom reads a VM, its VMI (may be nil), its DataVolume (may be
// nil) and its launcher pods' statuses (may be nil).
func sandboxFrom(vm *kvv1.VirtualMachine, vmi *kvv1.VirtualMachineInstance, dv *cdiv1.DataVolume, pods []corev1.Pod) *Sandbox {
	s := &Sandbox{
		Name:      vm.Name,
		Namespace: vm.Namespace,
		ID:        vm.Labels[LabelSandbox],
		Image:     vm.Annotations[AnnotationImage],
		ImageRef:  vm.Annotations[AnnotationImageRef],
		Created:   vm.CreationTimestamp.Time,
		State:     string(vm.Status.PrintableStatus),
		Ready:     vm.Status.Ready,
	}
	if s.State == "" {
		s.State = string(kvv1.VirtualMachineStatusStopped)
	}
	if rs := vm.Spec.RunStrategy; rs != nil {
		s.Running = *rs != kvv1.RunStrategyHalted
	} else if vm.Spec.Running != nil {
		s.Running = *vm.Spec.Running
	}
	if t := vm.Spec.Template; t != nil {
		for _, v := range t.Spec.Volumes {
			if v.ContainerDisk != nil {
				s.Ephemeral = true
			}
		}
	}
	if vmi != nil {
		s.Phase = string(vmi.Status.Phase)
		s.Node = vmi.Status.NodeName
		for _, ifc := range vmi.Status.Interfaces {
			if ifc.Name == podNetwork || s.IP == "" {
				s.IP = ifc.IP
			}
		}
	}
	s.Problem = problem(vm, vmi, dv, pods)
	return s
}

// problem finds a reason the sandbox is stuck that the user must fix.
func problem(vm *kvv1.VirtualMachine, vmi *kvv1.VirtualMachineInstance, dv *cdiv1.DataVolume, pods []corev1.Pod) error {
	name := vm.Name
	// Unschedulable: the VMI's (or the VM's copy of the) PodScheduled
	// condition.
	var conds []struct{ typ, status, reason, msg string }
	if vmi != nil {
		for _, c := range vmi.Status.Conditions {
			conds = append(conds, struct{ typ, status, reason, msg string }{string(c.Type), string(c.Status), c.Reason, c.Message})
		}
	}
	for _, c := range vm.Status.Conditions {
		conds = append(conds, struct{ typ, status, reason, msg string }{string(c.Type), string(c.Status), c.Reason, c.Message})
	}
	for _, c := range conds {
		if c.typ == string(corev1.PodScheduled) && c.status == string(corev1.ConditionFalse) {
			return newError(ErrUnschedulable, nil, "sandbox %s is stuck scheduling: condition %s=False (%s): %s: %s", name, c.typ, c.reason, strings.TrimSpace(c.msg), scheduleFix(c.msg))
		}
	}
	switch vm.Status.PrintableStatus {
	case kvv1.VirtualMachineStatusUnschedulable:
		return newError(ErrUnschedulable, nil, "sandbox %s is stuck scheduling (ErrorUnschedulable): %s", name, scheduleFix(""))
	case kvv1.VirtualMachineStatusErrImagePull, kvv1.VirtualMachineStatusImagePullBackOff:
		ref := vm.Annotations[AnnotationImageRef]
		detail := podWaitingMessage(pods)
		if detail == "" {
			detail = string(vm.Status.PrintableStatus)
		}
		return newError(ErrImagePull, nil, "the node could not pull %s for sandbox %s (%s): make sure the nodes can reach that registry and, if it is private, that the sandbox was created with its credentials", ref, name, detail)
	case kvv1.VirtualMachineStatusDataVolumeError:
		return newError(ErrDisk, nil, "CDI failed to import the root disk of sandbox %s from %s (%s): check that the nodes' importer pods can reach the registry and that the image was pushed with --format kubevirt", name, vm.Annotations[AnnotationImageRef], dvMessage(dv))
	case kvv1.VirtualMachineStatusPvcNotFound:
		return newError(ErrDisk, nil, "the root disk of sandbox %s is gone (its PVC is missing): remove the sandbox and create it again", name)
	}
	if dv != nil && dv.Status.Phase == cdiv1.Failed {
		return newError(ErrDisk, nil, "CDI failed to import the root disk of sandbox %s (%s): check the registry and the importer pod's log", name, dvMessage(dv))
	}
	return nil
}

// scheduleFix suggests a fix for a scheduler message.
func scheduleFix(msg string) string {
	switch {
	case strings.Contains(msg, "devices.kubevirt.io/kvm"):
		return "the nodes have no usable /dev/kvm: set spec.configuration.developerConfiguration.useEmulation: true in the KubeVirt CR (software emulation, slow), or use nodes with KVM"
	case strings.Contains(msg, "Insufficient memory"):
		return "no node has that much free memory: create the sandbox with less memory, or free some"
	case strings.Contains(msg, "Insufficient cpu"):
		return "no node has that many free CPUs: create the sandbox with fewer CPUs"
	case strings.Contains(msg, "unbound immediate PersistentVolumeClaims") || strings.Contains(msg, "persistentvolumeclaim"):
		return "the root disk's PVC is not bound: set a default StorageClass in the cluster or pass one, or use --ephemeral"
	case strings.Contains(msg, "node(s) didn't match Pod's node affinity/selector"):
		return "no node matches the VM's architecture or selectors: check the image's architecture against the nodes'"
	}
	return "see `kubectl describe vmi` for the scheduler's reason"
}

func podWaitingMessage(pods []corev1.Pod) string {
	for _, p := range pods {
		for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, cs := range list {
				if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
					return fmt.Sprintf("%s: %s", w.Reason, strings.Join(strings.Fields(w.Message), " "))
				}
			}
		}
	}
	return ""
}

func dvMessage(dv *cdiv1.DataVolume) string {
	if dv == nil {
		return "no DataVolume status"
	}
	for _, c := range dv.Status.Conditions {
		if c.Status == corev1.ConditionFalse && c.Message != "" {
			return fmt.Sprintf("%s: %s", c.Reason, strings.Join(strings.Fields(c.Message), " "))
		}
	}
	return "phase " + string(dv.Status.Phase)
}
