package registry

import (
	"net/http"
	"net/url"
	"testing"
)

// An upload's next request goes where the registry's Location says, made absolute, but
// never to a private address of another host than the registry's.
func TestNextLocation(t *testing.T) {
	for _, tc := range []struct{ reg, loc, want string }{
		{"http://127.0.0.1:5000/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u?_state=x", "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"},
		{"https://reg.example/v2/a/blobs/uploads/", "https://storage.example/up/1", "https://storage.example/up/1"},
		{"https://10.0.0.5/v2/a/blobs/uploads/", "https://10.0.0.5/v2/a/blobs/uploads/u", "https://10.0.0.5/v2/a/blobs/uploads/u"},
		{"https://reg.example/v2/a/blobs/uploads/", "http://169.254.169.254/latest", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "http://10.1.2.3/x", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "http://localhost:8080/x", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "file:///etc/passwd", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "", ""},
	} {
		u, _ := url.Parse(tc.reg)
		resp := &http.Response{Header: http.Header{}, Request: &http.Request{URL: u}}
		if tc.loc != "" {
			resp.Header.Set("Location", tc.loc)
		}
		got, err := nextLocation(resp)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Location %q from %s: %s, want an error", tc.loc, tc.reg, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Location %q from %s: %q, %v; want %q", tc.loc, tc.reg, got, err, tc.want)
		}
	}
}
