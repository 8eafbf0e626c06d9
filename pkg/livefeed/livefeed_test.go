package livefeed

import (
	"testing"
)

func TestPublishWakesOnlyItsKeyAndCoalesces(t *testing.T) {
	h := New()
	a, cancelA := h.Subscribe("a")
	b, cancelB := h.Subscribe("b")
	defer cancelB()
	for range 100 { // never blocks, however many
		h.Publish("a")
	}
	select {
	case <-a:
	default:
		t.Fatal("subscriber of a not woken")
	}
	select {
	case <-a:
		t.Fatal("wake-ups did not coalesce")
	default:
	}
	select {
	case <-b:
		t.Fatal("subscriber of b woken by a")
	default:
	}
	h.Publish("")
	select {
	case <-b:
	default:
		t.Fatal("publish to everyone missed b")
	}
	if h.Subscribers() != 2 {
		t.Fatalf("subscribers = %d", h.Subscribers())
	}
	cancelA()
	cancelA()
	if h.Subscribers() != 1 {
		t.Fatalf("subscribers after cancel = %d", h.Subscribers())
	}
	h.Publish("a") // no subscriber left: nothing happens
}
