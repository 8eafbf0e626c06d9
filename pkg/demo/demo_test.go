package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

func TestHandlerServesThePage(t *testing.T) {
	h := Handler(Config{Regions: []string{"ams", "fra"}, PrewarmLead: 90 * time.Second})
	res, page := get(t, h, "/demo/")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /demo/ = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("Content-Security-Policy allows unsafe sources: %q", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, " onclick=") {
		t.Error("index.html has inline script or style, which the policy forbids")
	}
	// Every file the page references is served, with its type.
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("the page references %d files", len(refs))
	}
	types := map[string]string{".js": "text/javascript", ".css": "text/css"}
	for _, r := range refs {
		res, _ := get(t, h, "/demo/"+r[1])
		ext := r[1][strings.LastIndex(r[1], "."):]
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), types[ext]) {
			t.Errorf("GET /demo/%s = %d %s", r[1], res.StatusCode, res.Header.Get("Content-Type"))
		}
		if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET /demo/%s lacks the security headers", r[1])
		}
	}
}

func TestHandlerRedirectsAndRefuses(t *testing.T) {
	h := Handler(Config{Regions: []string{"ams", "fra"}, PrewarmLead: 90 * time.Second})
	res, _ := get(t, h, "/demo")
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/demo/" {
		t.Fatalf("GET /demo = %d Location %q, want 301 /demo/", res.StatusCode, res.Header.Get("Location"))
	}
	for _, path := range []string{"/demo/missing.js", "/demo/../go.mod", "/elsewhere"} {
		if res, _ := get(t, h, path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, res.StatusCode)
		}
	}
}

func TestHandlerServesTheConfig(t *testing.T) {
	h := Handler(Config{Regions: []string{"ams", "fra"}, PrewarmLead: 90 * time.Second})
	res, body := get(t, h, "/demo/config.json")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /demo/config.json = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("GET /demo/config.json lacks the security headers")
	}
	var got struct {
		Regions            []string `json:"regions"`
		PrewarmLeadSeconds float64  `json:"prewarm_lead_seconds"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("config %q: %v", body, err)
	}
	if strings.Join(got.Regions, ",") != "ams,fra" || got.PrewarmLeadSeconds != 90 {
		t.Errorf("config = %+v, want regions ams,fra and a 90 s lead", got)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/demo/config.json", strings.NewReader("{}")))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /demo/config.json = %d, want 405", rec.Code)
	}
	// Without regions the list is empty, not null.
	if _, body := get(t, Handler(Config{}), "/demo/config.json"); !strings.Contains(body, `"regions":[]`) {
		t.Errorf("config without regions = %s", body)
	}
}
