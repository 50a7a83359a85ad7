package kubevirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// The resources heyvm touches.
var (
	gvrVM     = kvv1.GroupVersion.WithResource("virtualmachines")
	gvrVMI    = kvv1.GroupVersion.WithResource("virtualmachineinstances")
	gvrDV     = cdiv1.SchemeGroupVersion.WithResource("datavolumes")
	gvrSecret = corev1.SchemeGroupVersion.WithResource("secrets")
	gvrPVC    = corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims")
	gvrPod    = corev1.SchemeGroupVersion.WithResource("pods")
	gvrSSAR   = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}
)

// Config says which cluster and namespace: a kubeconfig file (""
// follows KUBECONFIG, then ~/.kube/config, as kubectl does), a context in
// it ("" is its current context) and a namespace ("" is the context's,
// else "default").
type Config struct {
	Kubeconfig string
	Context    string
	Namespace  string
}

// Cluster is a namespace of a KubeVirt cluster holding sandboxes.
type Cluster struct {
	Namespace string
	rest      *rest.Config
	dyn       dynamic.Interface
}

// New loads the kubeconfig the way kubectl does (its exec credential
// plugins included) and returns a client for the namespace. It does not
// contact the cluster; Check does.
func New(cfg Config) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules.ExplicitPath = cfg.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, explainConfig(err, cfg.Kubeconfig)
	}
	ns := cfg.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, explainConfig(err, cfg.Kubeconfig)
		}
	}
	return NewForConfig(rc, ns)
}

// NewForConfig is New for a rest.Config made elsewhere.
func NewForConfig(rc *rest.Config, namespace string) (*Cluster, error) {
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = "heyvm"
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return newCluster(rc, dyn, namespace), nil
}

func newCluster(rc *rest.Config, dyn dynamic.Interface, namespace string) *Cluster {
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	return &Cluster{Namespace: namespace, rest: rc, dyn: dyn}
}

func (c *Cluster) res(gvr schema.GroupVersionResource) dynamic.ResourceInterface {
	return c.dyn.Resource(gvr).Namespace(c.Namespace)
}

// Check makes sure the cluster can hold sandboxes: KubeVirt is installed
// (and CDI, unless needCDI is false), and the user may create VMs and open
// their console and portforward subresources. It returns every problem it
// finds, each as one line.
func (c *Cluster) Check(ctx context.Context, needCDI bool) error {
	var errs []error
	probe := func(gvr schema.GroupVersionResource) error {
		_, err := c.res(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if isMissingResource(err) {
			return missingKind(gvr.Resource)
		}
		return c.explain(err, "list "+gvr.Resource)
	}
	if err := probe(gvrVM); err != nil {
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrNoKubeVirt) {
			return err
		}
		errs = append(errs, err)
	}
	if needCDI {
		if err := probe(gvrDV); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range []struct{ group, resource, sub, verb string }{
		{"kubevirt.io", "virtualmachines", "", "create"},
		{"subresources.kubevirt.io", "virtualmachineinstances", "console", "get"},
		{"subresources.kubevirt.io", "virtualmachineinstances", "portforward", "get"},
	} {
		ok, reason, err := c.can(ctx, a.verb, a.group, a.resource, a.sub)
		if err != nil {
			// Access reviews are a convenience: a cluster that refuses them
			// still gets the real answer on first use.
			continue
		}
		if !ok {
			what := a.resource
			if a.sub != "" {
				what += "/" + a.sub
			}
			errs = append(errs, newError(ErrForbidden, nil, "you may not %s %s in namespace %s (RBAC%s): ask a cluster admin for the kubevirt.io:edit role there, e.g. `kubectl create rolebinding heyvm --clusterrole=kubevirt.io:edit --user=YOU -n %s`", a.verb, what, c.Namespace, reason, c.Namespace))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) can(ctx context.Context, verb, group, resource, sub string) (bool, string, error) {
	review := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "authorization.k8s.io/v1",
		"kind":       "SelfSubjectAccessReview",
		"spec": map[string]any{"resourceAttributes": map[string]any{
			"namespace": c.Namespace, "verb": verb, "group": group, "resource": resource, "subresource": sub,
		}},
	}}
	out, err := c.dyn.Resource(gvrSSAR).Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	allowed, _, _ := unstructured.NestedBool(out.Object, "status", "allowed")
	reason, _, _ := unstructured.NestedString(out.Object, "status", "reason")
	if reason != "" {
		reason = ": " + reason
	}
	return allowed, reason, nil
}

// Create sends a sandbox's objects: the pull Secret first (the VM's pods
// need it), then the VirtualMachine, whose DataVolume template KubeVirt
// turns into the root disk.
func (c *Cluster) Create(ctx context.Context, set *Set) error {
	vm := set.VirtualMachine.DeepCopy()
	vm.Namespace = c.Namespace
	if set.Secret != nil {
		s := set.Secret.DeepCopy()
		s.Namespace = c.Namespace
		if err := c.create(ctx, gvrSecret, s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return newError(ErrExists, err, "a Secret %s already exists in namespace %s: remove the old sandbox %s with `heyvm rm %s`, or pick another name", s.Name, c.Namespace, vm.Name, vm.Name)
			}
			return c.explain(err, "create Secret "+s.Name)
		}
	}
	err := c.create(ctx, gvrVM, vm)
	if err == nil {
		return nil
	}
	if set.Secret != nil {
		c.res(gvrSecret).Delete(context.WithoutCancel(ctx), set.Secret.Name, metav1.DeleteOptions{})
	}
	switch {
	case apierrors.IsAlreadyExists(err):
		return newError(ErrExists, err, "a VirtualMachine named %s already exists in namespace %s: pick another name, or remove it with `heyvm rm %s`", vm.Name, c.Namespace, vm.Name)
	case isMissingResource(err):
		return missingKind("virtualmachines")
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return fmt.Errorf("the cluster refused VirtualMachine %s: %s", vm.Name, oneLine(err))
	}
	return c.explain(err, "create VirtualMachine "+vm.Name)
}

func (c *Cluster) create(ctx context.Context, gvr schema.GroupVersionResource, obj runtime.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	_, err = c.res(gvr).Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{})
	return err
}

// Selector selects every sandbox's objects.
const Selector = LabelSandbox

// List returns the namespace's sandboxes, by name.
func (c *Cluster) List(ctx context.Context) ([]*Sandbox, error) {
	vms, err := c.res(gvrVM).List(ctx, metav1.ListOptions{LabelSelector: Selector})
	if isMissingResource(err) {
		return nil, missingKind("virtualmachines")
	}
	if err != nil {
		return nil, c.explain(err, "list VirtualMachines")
	}
	vmis := map[string]*kvv1.VirtualMachineInstance{}
	if l, err := c.res(gvrVMI).List(ctx, metav1.ListOptions{LabelSelector: Selector}); err == nil {
		for i := range l.Items {
			var vmi kvv1.VirtualMachineInstance
			if fromUnstructured(&l.Items[i], &vmi) == nil {
				vmis[vmi.Name] = &vmi
			}
		}
	}
	var out []*Sandbox
	for i := range vms.Items {
		var vm kvv1.VirtualMachine
		if err := fromUnstructured(&vms.Items[i], &vm); err != nil {
			return nil, err
		}
		out = append(out, sandboxFrom(&vm, vmis[vm.Name], nil, nil))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get returns one sandbox with its state, address and node, and any
// problem KubeVirt or CDI report for it.
func (c *Cluster) Get(ctx context.Context, name string) (*Sandbox, error) {
	vm, err := c.getVM(ctx, name)
	if err != nil {
		return nil, err
	}
	var vmi *kvv1.VirtualMachineInstance
	if u, err := c.res(gvrVMI).Get(ctx, name, metav1.GetOptions{}); err == nil {
		vmi = &kvv1.VirtualMachineInstance{}
		if fromUnstructured(u, vmi) != nil {
			vmi = nil
		}
	}
	var dv *cdiv1.DataVolume
	if len(vm.Spec.DataVolumeTemplates) > 0 {
		if u, err := c.res(gvrDV).Get(ctx, vm.Spec.DataVolumeTemplates[0].Name, metav1.GetOptions{}); err == nil {
			dv = &cdiv1.DataVolume{}
			if fromUnstructured(u, dv) != nil {
				dv = nil
			}
		}
	}
	var pods []corev1.Pod
	switch vm.Status.PrintableStatus {
	case kvv1.VirtualMachineStatusErrImagePull, kvv1.VirtualMachineStatusImagePullBackOff:
		// The pull error's text is only in the launcher pod's status; a
		// user who may not read pods gets the status name alone.
		if l, err := c.res(gvrPod).List(ctx, metav1.ListOptions{LabelSelector: "vm.kubevirt.io/name=" + name}); err == nil {
			for i := range l.Items {
				var p corev1.Pod
				if fromUnstructured(&l.Items[i], &p) == nil {
					pods = append(pods, p)
				}
			}
		}
	}
	return sandboxFrom(vm, vmi, dv, pods), nil
}

func (c *Cluster) getVM(ctx context.Context, name string) (*kvv1.VirtualMachine, error) {
	u, err := c.res(gvrVM).Get(ctx, name, metav1.GetOptions{})
	switch {
	case isMissingResource(err):
		return nil, missingKind("virtualmachines")
	case apierrors.IsNotFound(err):
		return nil, newError(ErrNotFound, err, "no sandbox %s in namespace %s: see `heyvm list`", name, c.Namespace)
	case err != nil:
		return nil, c.explain(err, "get VirtualMachine "+name)
	}
	vm := &kvv1.VirtualMachine{}
	if err := fromUnstructured(u, vm); err != nil {
		return nil, err
	}
	if vm.Labels[LabelSandbox] == "" {
		return nil, newError(ErrNotFound, nil, "VirtualMachine %s in namespace %s is not a heyvm sandbox (no %s label): heyvm leaves it alone", name, c.Namespace, LabelSandbox)
	}
	return vm, nil
}

// Start sets the VM's runStrategy to Always; Stop sets it to Halted, and
// KubeVirt shuts the guest down: an ACPI power button press, then a kill
// after the grace period (Options.GracePeriodSeconds). heyvm's guest init
// does not act on the power button, so a clean stop runs `poweroff` in
// the guest first (over SSH, as the local stop does) and then calls Stop.
// Neither waits: see Wait.
func (c *Cluster) Start(ctx context.Context, name string) error {
	return c.setRunStrategy(ctx, name, kvv1.RunStrategyAlways)
}

func (c *Cluster) Stop(ctx context.Context, name string) error {
	return c.setRunStrategy(ctx, name, kvv1.RunStrategyHalted)
}

func (c *Cluster) setRunStrategy(ctx context.Context, name string, rs kvv1.VirtualMachineRunStrategy) error {
	if _, err := c.getVM(ctx, name); err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"spec":{"runStrategy":%q}}`, rs)
	_, err := c.res(gvrVM).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return newError(ErrNotFound, err, "no sandbox %s in namespace %s: see `heyvm list`", name, c.Namespace)
	}
	return c.explain(err, "set runStrategy "+string(rs)+" on VirtualMachine "+name)
}

// Delete removes the VM, its root disk (DataVolume and PVC) and its pull
// Secret. KubeVirt's and Kubernetes' garbage collection would take the
// disk with the VM anyway (owner references); deleting it explicitly also
// covers a DataVolume orphaned by an interrupted create.
func (c *Cluster) Delete(ctx context.Context, name string) error {
	vm, err := c.getVM(ctx, name)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	if err := c.res(gvrVM).Delete(ctx, name, opts); err != nil && !apierrors.IsNotFound(err) {
		return c.explain(err, "delete VirtualMachine "+name)
	}
	var errs []error
	for _, t := range vm.Spec.DataVolumeTemplates {
		for _, gvr := range []schema.GroupVersionResource{gvrDV, gvrPVC} {
			err := c.res(gvr).Delete(ctx, t.Name, opts)
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, c.explain(err, "delete "+gvr.Resource+" "+t.Name))
			}
		}
	}
	// The pull Secret, found by the sandbox's label (deleted one by one:
	// a user may delete Secrets without being allowed deletecollection).
	sel := metav1.ListOptions{LabelSelector: LabelSandbox + "=" + vm.Labels[LabelSandbox]}
	secrets, err := c.res(gvrSecret).List(ctx, sel)
	if err != nil {
		errs = append(errs, c.explain(err, "list the pull Secret of "+name))
	} else {
		for _, s := range secrets.Items {
			if err := c.res(gvrSecret).Delete(ctx, s.GetName(), opts); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, c.explain(err, "delete Secret "+s.GetName()))
			}
		}
	}
	return errors.Join(errs...)
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// Wait polls Get every interval until done says the sandbox got where the
// caller wants, KubeVirt or CDI report a problem that waiting will not fix
// (returned as the error), or ctx ends. done(s) for a started sandbox is
// typically s.Phase == "Running"; for a stopped one, s.Phase == "".
func (c *Cluster) Wait(ctx context.Context, name string, interval time.Duration, done func(*Sandbox) bool) (*Sandbox, error) {
	for {
		s, err := c.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		if done(s) {
			return s, nil
		}
		if s.Problem != nil {
			return s, s.Problem
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("sandbox %s is still %s: %w", name, s.State, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// ConsoleLogContainer is the virt-launcher pod's container that logs the
// VMI's serial console (KubeVirt's LogSerialConsole, on by default).
const ConsoleLogContainer = "guest-console-log"

// ConsoleLog streams a running sandbox's serial console log, as KubeVirt
// keeps it in its launcher pod.
func (c *Cluster) ConsoleLog(ctx context.Context, name string, follow bool) (io.ReadCloser, error) {
	l, err := c.res(gvrPod).List(ctx, metav1.ListOptions{LabelSelector: "vm.kubevirt.io/name=" + name})
	if err != nil {
		return nil, c.explain(err, "list the pods of "+name)
	}
	if len(l.Items) == 0 {
		return nil, fmt.Errorf("sandbox %s has no launcher pod (it is not running), so no console log: start it first", name)
	}
	cs, err := kubernetes.NewForConfig(c.rest)
	if err != nil {
		return nil, err
	}
	pod := l.Items[len(l.Items)-1].GetName()
	r, err := cs.CoreV1().Pods(c.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: ConsoleLogContainer, Follow: follow}).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("the console log of %s (pod %s, container %s; KubeVirt logs it unless its LogSerialConsole is off): %w", name, pod, ConsoleLogContainer, c.explain(err, "read the log"))
	}
	return r, nil
}
