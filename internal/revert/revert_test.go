package revert

import (
	"errors"
	"reflect"
	"testing"
)

func TestUnwindRunsInReverseAndContinuesOnError(t *testing.T) {
	var s Stack
	var got []string
	s.Push("a", func() error { got = append(got, "a"); return nil })
	s.Push("b", func() error { got = append(got, "b"); return errors.New("boom") })
	s.Push("c", func() error { got = append(got, "c"); return nil })
	err := s.Unwind(nil)
	if !reflect.DeepEqual(got, []string{"c", "b", "a"}) {
		t.Fatalf("order = %v", got)
	}
	if err == nil || err.Error() != "undoing b: boom" {
		t.Fatalf("err = %v", err)
	}
	if err := s.Unwind(nil); err != nil || len(got) != 3 {
		t.Fatal("second unwind ran steps again")
	}
}

func TestReleaseSkipsUndo(t *testing.T) {
	var s Stack
	ran := false
	s.Push("a", func() error { ran = true; return nil })
	s.Release()
	if err := s.Unwind(nil); err != nil || ran {
		t.Fatalf("undo ran after release (err %v)", err)
	}
}
