package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestErrorTableRoundTrip(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		kind   *errkind.Kind
	}{
		{errkind.New(errkind.NotFound, "image %q not found", "x"), http.StatusNotFound, CodeNotFound, errkind.NotFound},
		{errkind.New(errkind.AlreadyExists, "dup"), http.StatusConflict, CodeAlreadyExists, errkind.AlreadyExists},
		{fmt.Errorf("wrapped: %w", errkind.New(errkind.InvalidArgument, "bad")), http.StatusBadRequest, CodeInvalidArgument, errkind.InvalidArgument},
		{errkind.New(errkind.Conflict, "busy"), http.StatusConflict, CodeConflict, errkind.Conflict},
		{errkind.New(errkind.Unavailable, "down"), http.StatusServiceUnavailable, CodeUnavailable, errkind.Unavailable},
		{fmt.Errorf("op: %w", context.Canceled), 499, CodeCanceled, nil},
		{errors.New("boom"), http.StatusInternalServerError, CodeInternal, nil},
	}
	for _, tt := range tests {
		status, body := FromError(tt.err)
		if status != tt.status || body.Code != tt.code {
			t.Errorf("%v: got %d %s, want %d %s", tt.err, status, body.Code, tt.status, tt.code)
		}
		back := body.Err()
		if back.Error() != tt.err.Error() {
			t.Errorf("message changed: %q -> %q", tt.err, back)
		}
		if tt.kind != nil && !errors.Is(back, tt.kind) {
			t.Errorf("%v: rebuilt error lost its kind", tt.err)
		}
	}
	hinted := errkind.WithHint(errkind.New(errkind.Conflict, "running"), "stop it first")
	_, body := FromError(hinted)
	if body.Hint != "stop it first" || errkind.Hint(body.Err()) != "stop it first" {
		t.Fatalf("hint lost: %+v", body)
	}
}
