package controller

import (
	"net/http"
	"strings"
	"testing"
)

// TestDemoPageOnlyWhenEnabled: the demo page is mounted only with DEMO=true
// (the browser test in e2e/ drives it).
func TestDemoPageOnlyWhenEnabled(t *testing.T) {
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(url string) *http.Response {
		t.Helper()
		res, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	off := startController(t, nil)
	if res := get(off.base + "/demo/"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /demo/ without DEMO = %d, want 404", res.StatusCode)
	}
	on := startController(t, map[string]string{"DEMO": "true"})
	if res := get(on.base + "/demo"); res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/demo/" {
		t.Fatalf("GET /demo = %d to %q, want 301 to /demo/", res.StatusCode, res.Header.Get("Location"))
	}
	res := get(on.base + "/demo/")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /demo/ with DEMO=true = %d %q, CSP %q", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Content-Security-Policy"))
	}
}
