package server

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"
)

// TestOpenAPIDocumentsEveryRoute keeps docs/openapi.json and the route
// table in step: every route is documented and every documented operation
// exists.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	s := &Server{}
	served := map[string]bool{}
	for _, r := range s.routeTable() {
		served[r.method+" /v1"+r.path] = true
	}
	var missing, stale []string
	for k := range served {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !served[k] {
			stale = append(stale, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Fatalf("openapi out of date:\n undocumented routes: %v\n documented but not served: %v", missing, stale)
	}
}
