package kubevirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/rest"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func fakeCluster(t *testing.T, objs ...runtime.Object) (*Cluster, *dynfake.FakeDynamicClient) {
	t.Helper()
	lists := map[schema.GroupVersionResource]string{
		gvrVM: "VirtualMachineList", gvrVMI: "VirtualMachineInstanceList", gvrDV: "DataVolumeList",
		gvrSecret: "SecretList", gvrPVC: "PersistentVolumeClaimList", gvrPod: "PodList",
	}
	var us []runtime.Object
	for _, o := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, &unstructured.Unstructured{Object: m})
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), lists, us...)
	return newCluster(&rest.Config{Host: "https://cluster.example"}, dyn, "dev"), dyn
}

func TestCreateListStopStartDelete(t *testing.T) {
	ctx := context.Background()
	c, dyn := fakeCluster(t,
		// Somebody else's VM in the namespace: never listed, never touched.
		&kvv1.VirtualMachine{TypeMeta: metav1.TypeMeta{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachine"},
			ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "dev"}})
	o := testOptions()
	o.Namespace = ""
	o.Pull = &Credentials{Server: "registry.example:5000", Username: "u", Password: "p"}
	set, err := Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, set); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	// KubeVirt would make the DataVolume and its PVC from the template.
	for _, gvr := range []schema.GroupVersionResource{gvrDV, gvrPVC} {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(gvr.GroupVersion().String())
		u.SetKind(map[string]string{"datavolumes": "DataVolume", "persistentvolumeclaims": "PersistentVolumeClaim"}[gvr.Resource])
		u.SetName("demo-root")
		u.SetNamespace("dev")
		if _, err := dyn.Resource(gvr).Namespace("dev").Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "demo" || list[0].ID != o.ID || list[0].Image != "debian:12" || !list[0].Running {
		t.Fatalf("list = %+v", list)
	}
	if _, err := c.Get(ctx, "theirs"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a VM without the label: %v", err)
	}

	if err := c.Stop(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	s, err := c.Get(ctx, "demo")
	if err != nil || s.Running {
		t.Fatalf("after stop: %+v, %v", s, err)
	}
	u, _ := dyn.Resource(gvrVM).Namespace("dev").Get(ctx, "demo", metav1.GetOptions{})
	if rs, _, _ := unstructured.NestedString(u.Object, "spec", "runStrategy"); rs != "Halted" {
		t.Fatalf("runStrategy after stop: %q", rs)
	}
	if err := c.Start(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	u, _ = dyn.Resource(gvrVM).Namespace("dev").Get(ctx, "demo", metav1.GetOptions{})
	if rs, _, _ := unstructured.NestedString(u.Object, "spec", "runStrategy"); rs != "Always" {
		t.Fatalf("runStrategy after start: %q", rs)
	}

	if err := c.Delete(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	for _, gvr := range []schema.GroupVersionResource{gvrVM, gvrDV, gvrPVC, gvrSecret} {
		l, err := dyn.Resource(gvr).Namespace("dev").List(ctx, metav1.ListOptions{LabelSelector: Selector})
		if err != nil {
			t.Fatal(err)
		}
		if gvr == gvrVM || gvr == gvrSecret {
			if len(l.Items) != 0 {
				t.Errorf("%s left: %v", gvr.Resource, l.Items)
			}
			continue
		}
		if _, err := dyn.Resource(gvr).Namespace("dev").Get(ctx, "demo-root", metav1.GetOptions{}); err == nil {
			t.Errorf("%s demo-root left", gvr.Resource)
		}
	}
	if _, err := dyn.Resource(gvrVM).Namespace("dev").Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Errorf("someone else's VM was touched: %v", err)
	}
	if err := c.Stop(ctx, "demo"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "heyvm list") {
		t.Fatalf("stop of a removed sandbox: %v", err)
	}
}

func runningVM(t *testing.T, mod func(*kvv1.VirtualMachine)) *kvv1.VirtualMachine {
	o := testOptions()
	set, err := Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	vm := set.VirtualMachine
	if mod != nil {
		mod(vm)
	}
	return vm
}

func TestGetReadsVMIStatus(t *testing.T) {
	vm := runningVM(t, func(vm *kvv1.VirtualMachine) {
		vm.Status = kvv1.VirtualMachineStatus{PrintableStatus: kvv1.VirtualMachineStatusRunning, Ready: true}
	})
	vmi := &kvv1.VirtualMachineInstance{
		TypeMeta:   metav1.TypeMeta{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachineInstance"},
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "dev", Labels: vm.Labels},
		Status: kvv1.VirtualMachineInstanceStatus{
			Phase: kvv1.Running, NodeName: "node-2",
			Interfaces: []kvv1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.244.1.7"}},
		},
	}
	c, _ := fakeCluster(t, vm, vmi)
	s, err := c.Get(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != "Running" || !s.Ready || s.IP != "10.244.1.7" || s.Node != "node-2" || s.Phase != "Running" || s.Problem != nil {
		t.Fatalf("%+v", s)
	}
	l, err := c.List(context.Background())
	if err != nil || len(l) != 1 || l[0].IP != "10.244.1.7" {
		t.Fatalf("list %+v, %v", l, err)
	}
}

func TestGetExplainsStuckSandboxes(t *testing.T) {
	unschedulable := runningVM(t, func(vm *kvv1.VirtualMachine) {
		vm.Status.PrintableStatus = kvv1.VirtualMachineStatusUnschedulable
		vm.Status.Conditions = []kvv1.VirtualMachineCondition{{
			Type: kvv1.VirtualMachineConditionType(corev1.PodScheduled), Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/3 nodes are available: 3 Insufficient devices.kubevirt.io/kvm.",
		}}
	})
	c, _ := fakeCluster(t, unschedulable)
	s, err := c.Get(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(s.Problem, ErrUnschedulable) || !strings.Contains(s.Problem.Error(), "PodScheduled=False (Unschedulable)") || !strings.Contains(s.Problem.Error(), "useEmulation") {
		t.Fatalf("problem: %v", s.Problem)
	}

	pull := runningVM(t, func(vm *kvv1.VirtualMachine) { vm.Status.PrintableStatus = kvv1.VirtualMachineStatusImagePullBackOff })
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-demo-x", Namespace: "dev", Labels: map[string]string{"vm.kubevirt.io/name": "demo"}},
		Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: "kernel-boot", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image \"registry.example:5000/heyvm/debian\": 401 Unauthorized"},
		}}}},
	}
	c, _ = fakeCluster(t, pull, pod)
	s, err = c.Get(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(s.Problem, ErrImagePull) || !strings.Contains(s.Problem.Error(), "401 Unauthorized") || strings.Contains(s.Problem.Error(), "\n") {
		t.Fatalf("problem: %v", s.Problem)
	}

	dvErr := runningVM(t, func(vm *kvv1.VirtualMachine) { vm.Status.PrintableStatus = kvv1.VirtualMachineStatusDataVolumeError })
	dv := &cdiv1.DataVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cdi.kubevirt.io/v1beta1", Kind: "DataVolume"},
		ObjectMeta: metav1.ObjectMeta{Name: "demo-root", Namespace: "dev"},
		Status: cdiv1.DataVolumeStatus{Phase: cdiv1.ImportInProgress, Conditions: []cdiv1.DataVolumeCondition{{
			Type: cdiv1.DataVolumeRunning, Status: corev1.ConditionFalse, Reason: "Error", Message: "Unable to process data: no disk image in /disk",
		}}},
	}
	c, _ = fakeCluster(t, dvErr, dv)
	s, _ = c.Get(context.Background(), "demo")
	if !errors.Is(s.Problem, ErrDisk) || !strings.Contains(s.Problem.Error(), "no disk image in /disk") {
		t.Fatalf("problem: %v", s.Problem)
	}
}

// apiServer answers a few paths like an API server would, to check how
// errors reach the user.
func apiServer(t *testing.T, routes map[string]func(w http.ResponseWriter, r *http.Request)) *Cluster {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		if h, ok := routes[key]; ok {
			h(w, r)
			return
		}
		status(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource", nil)
	}))
	t.Cleanup(srv.Close)
	c, err := NewForConfig(&rest.Config{Host: srv.URL, BearerToken: "tok"}, "dev")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func status(w http.ResponseWriter, code int, reason, msg string, details map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	d := ""
	if details != nil {
		d = fmt.Sprintf(`,"details":{"name":%q,"kind":%q}`, details["name"], details["kind"])
	}
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d%s}`, msg, reason, code, d)
}

const vmsPath = "/apis/kubevirt.io/v1/namespaces/dev/virtualmachines"

func TestErrorsAreOneLineWithAFix(t *testing.T) {
	ctx := context.Background()
	check := func(err, kind error, want ...string) {
		t.Helper()
		if !errors.Is(err, kind) {
			t.Fatalf("got %v, want kind %v", err, kind)
		}
		// Check joins its problems (errors.Join): one line each.
		if _, single := err.(*Error); !single {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				if n := strings.Count(err.Error(), "\n") + 1; n != len(j.Unwrap()) {
					t.Errorf("%d lines for %d problems: %q", n, len(j.Unwrap()), err)
				}
			}
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("more than one line: %q", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q lacks %q", err, w)
			}
		}
	}

	// An expired login.
	c := apiServer(t, map[string]func(http.ResponseWriter, *http.Request){
		"GET " + vmsPath: func(w http.ResponseWriter, r *http.Request) {
			status(w, 401, "Unauthorized", "Unauthorized", nil)
		},
	})
	_, err := c.List(ctx)
	check(err, ErrUnauthorized, "log in again")
	check(c.Check(ctx, true), ErrUnauthorized)

	// No KubeVirt: the resource itself is unknown.
	c = apiServer(t, nil)
	_, err = c.List(ctx)
	check(err, ErrNoKubeVirt, "install KubeVirt "+TargetKubeVirt)
	check(c.Check(ctx, true), ErrNoKubeVirt)
	_, err = c.Get(ctx, "demo")
	check(err, ErrNoKubeVirt)

	// KubeVirt but no CDI, and RBAC that forbids the console.
	c = apiServer(t, map[string]func(http.ResponseWriter, *http.Request){
		"GET " + vmsPath: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineList","metadata":{},"items":[]}`)
		},
		"GET " + vmsPath + "/gone": func(w http.ResponseWriter, r *http.Request) {
			status(w, 404, "NotFound", `virtualmachines.kubevirt.io "gone" not found`, map[string]any{"name": "gone", "kind": "virtualmachines"})
		},
		"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews": func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				Spec struct {
					ResourceAttributes map[string]string `json:"resourceAttributes"`
				} `json:"spec"`
			}
			jsonDecode(r, &body)
			allowed := body.Spec.ResourceAttributes["subresource"] != "console"
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","status":{"allowed":%v}}`, allowed)
		},
	})
	err = c.Check(ctx, true)
	check(err, ErrNoCDI, "--ephemeral")
	check(err, ErrForbidden, "virtualmachineinstances/console", "kubevirt.io:edit")
	if errors.Is(err, ErrNoKubeVirt) || strings.Contains(err.Error(), "portforward") {
		t.Errorf("check: %v", err)
	}
	if err := c.Check(ctx, false); errors.Is(err, ErrNoCDI) {
		t.Errorf("ephemeral check asks for CDI: %v", err)
	}
	_, err = c.Get(ctx, "gone")
	check(err, ErrNotFound, "heyvm list")
}

func TestNoKubeconfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", dir)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := New(Config{})
	if !errors.Is(err, ErrNoKubeconfig) || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("err = %v", err)
	}

	// A kubeconfig with a context and a namespace.
	kc := filepath.Join(dir, "kc")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: one
  context: {cluster: c, user: u, namespace: team}
- name: two
  context: {cluster: c, user: u}
current-context: two
`), 0o600)
	t.Setenv("KUBECONFIG", kc)
	c, err := New(Config{Context: "one"})
	if err != nil || c.Namespace != "team" || c.rest.Host != "https://10.0.0.1:6443" {
		t.Fatalf("c = %+v, %v", c, err)
	}
	c, err = New(Config{Kubeconfig: kc})
	if err != nil || c.Namespace != "default" {
		t.Fatalf("c = %+v, %v", c, err)
	}
	c, err = New(Config{Kubeconfig: kc, Namespace: "mine"})
	if err != nil || c.Namespace != "mine" {
		t.Fatalf("c = %+v, %v", c, err)
	}
	if _, err := New(Config{Kubeconfig: kc, Context: "nope"}); !errors.Is(err, ErrNoKubeconfig) {
		t.Fatalf("unknown context: %v", err)
	}
}

func jsonDecode(r *http.Request, v any) { json.NewDecoder(r.Body).Decode(v) }

func TestWaitStopsOnAProblem(t *testing.T) {
	vm := runningVM(t, func(vm *kvv1.VirtualMachine) {
		vm.Status.PrintableStatus = kvv1.VirtualMachineStatusErrImagePull
	})
	c, _ := fakeCluster(t, vm)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Wait(ctx, "demo", 10*time.Millisecond, func(s *Sandbox) bool { return s.Phase == "Running" })
	if !errors.Is(err, ErrImagePull) {
		t.Fatalf("wait: %v", err)
	}
	ok := runningVM(t, nil)
	c, _ = fakeCluster(t, ok)
	s, err := c.Wait(ctx, "demo", 10*time.Millisecond, func(s *Sandbox) bool { return s.Running })
	if err != nil || s.Name != "demo" {
		t.Fatalf("wait: %+v, %v", s, err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := c.Wait(short, "demo", 10*time.Millisecond, func(s *Sandbox) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline: %v", err)
	}
}
