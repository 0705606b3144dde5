// Command gitops-health prints, for each Kubernetes object it reads, the health two GitOps
// tools would give it: kstatus (sigs.k8s.io/cli-utils, what Flux's `wait` and health checks
// use) and Argo CD (our health.lua run by gopher-lua, the interpreter Argo CD embeds, with the
// libraries Argo CD opens for a resource customization).
//
// Usage: gitops-health -health DIR [FILE...]
//
// Each FILE (standard input when none) holds JSON: one object, a List (`kubectl get -o json`)
// or an array of objects. DIR is the tree of Argo CD health checks, DIR/<group>/<Kind>/health.lua.
// The output is a JSON array, one entry per object, in input order. The exit status is 1 when a
// health.lua fails to run or returns something Argo CD would not accept (the entry says which).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Argo CD gives a health script one second (util/lua in argo-cd).
const scriptTimeout = time.Second

// The health statuses Argo CD accepts from a script; anything else it shows as Unknown.
var argoStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type report struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Namespace  string  `json:"namespace,omitempty"`
	Name       string  `json:"name"`
	Kstatus    health  `json:"kstatus"`
	ArgoCD     *health `json:"argocd"` // nil: no health.lua for the kind
	Error      string  `json:"error,omitempty"`
}

func main() {
	dir := flag.String("health", "", "the tree of Argo CD health checks: DIR/<group>/<Kind>/health.lua")
	flag.Parse()
	if *dir == "" {
		fail(errors.New("-health DIR is required (e.g. gitops/argocd/health)"))
	}
	objects, err := readObjects(flag.Args())
	if err != nil {
		fail(err)
	}
	reports := make([]report, 0, len(objects))
	broken := false
	for _, obj := range objects {
		r := check(obj, *dir)
		broken = broken || r.Error != ""
		reports = append(reports, r)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(reports); err != nil {
		fail(err)
	}
	if broken {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gitops-health:", err)
	os.Exit(2)
}

// readObjects reads every object of the files (stdin when none): single objects, Lists, arrays.
func readObjects(paths []string) ([]*unstructured.Unstructured, error) {
	var sources [][]byte
	if len(paths) == 0 {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, err
		}
		sources = append(sources, data)
	}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		sources = append(sources, data)
	}
	var objects []*unstructured.Unstructured
	for i, data := range sources {
		raws, err := splitObjects(data)
		if err != nil {
			return nil, fmt.Errorf("input %d: %w", i+1, err)
		}
		for _, raw := range raws {
			obj := &unstructured.Unstructured{}
			// Unstructured's own decoder keeps integers as int64, as kstatus expects.
			if err := obj.UnmarshalJSON(raw); err != nil {
				return nil, fmt.Errorf("input %d: %w", i+1, err)
			}
			objects = append(objects, obj)
		}
	}
	return objects, nil
}

func splitObjects(data []byte) ([]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if bytes.HasPrefix(data, []byte("[")) {
		var items []json.RawMessage
		return items, json.Unmarshal(data, &items)
	}
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	if strings.HasSuffix(list.Kind, "List") {
		return list.Items, nil
	}
	return []json.RawMessage{data}, nil
}

func check(obj *unstructured.Unstructured, dir string) report {
	r := report{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(),
		Namespace: obj.GetNamespace(), Name: obj.GetName()}
	if r.Name == "" {
		r.Name = obj.GetGenerateName()
	}
	res, err := status.Compute(obj)
	if err != nil {
		r.Error = "kstatus: " + err.Error()
	} else {
		r.Kstatus = health{Status: res.Status.String(), Message: res.Message}
	}
	group := obj.GroupVersionKind().Group
	script := filepath.Join(dir, group, obj.GetKind(), "health.lua")
	source, err := os.ReadFile(script)
	if errors.Is(err, os.ErrNotExist) {
		return r
	}
	if err == nil {
		var hs health
		hs, err = runHealth(string(source), obj.Object)
		r.ArgoCD = &hs
	}
	if err != nil {
		r.Error = strings.TrimSpace(r.Error + "\n" + script + ": " + err.Error())
	}
	return r
}

// runHealth runs a health script the way Argo CD does for a resource customization: only the
// package, base and table libraries are open (no string, math or io: a script that calls
// string.find fails here as it fails in Argo CD), `obj` is the object, and the script returns
// a table with a known status and a message.
func runHealth(source string, object map[string]any) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(source); err != nil {
		return health{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("returned a %s, not a table", l.Get(-1).Type())
	}
	hs := health{Status: luaString(table.RawGetString("status")),
		Message: luaString(table.RawGetString("message"))}
	if !argoStatuses[hs.Status] {
		return hs, fmt.Errorf("returned status %q, which Argo CD shows as Unknown", hs.Status)
	}
	return hs, nil
}

func luaString(v lua.LValue) string {
	if v == lua.LNil {
		return ""
	}
	return v.String()
}

// toLua turns the decoded JSON into Lua values as Argo CD does: maps and lists become tables,
// numbers LNumber, null nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}
