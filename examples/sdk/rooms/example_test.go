package rooms_test

import (
	"context"
	"fmt"
	"time"

	"github.com/lifeline-go/lifeline/examples/sdk/internal/fakerooms"
	"github.com/lifeline-go/lifeline/examples/sdk/rooms"
)

// Example is the SDK in use against a local rooms service whose signalling
// server cuts the websocket: the channel comes back, resubscribed, and the
// next event arrives.
func Example() {
	srv, err := fakerooms.New(fakerooms.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	c, err := rooms.New(rooms.Config{BaseURL: srv.URL(), APIKey: srv.APIKey()})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	room, err := c.CreateRoom(ctx, "standup") // retried safely: it carries an Idempotency-Key
	if err != nil {
		panic(err)
	}
	fmt.Println("created", room.ID, room.Name)

	events := make(chan rooms.Event, 16)
	sig, err := c.Signal(func(ev rooms.Event) { events <- ev })
	if err != nil {
		panic(err)
	}
	defer sig.Close()
	if err := sig.Subscribe(ctx, room.ID); err != nil {
		panic(err)
	}
	fmt.Println(<-events)
	fmt.Println("server dropped", srv.DropAll(), "conn")
	fmt.Println(<-events) // lifeline redialled, OnConnect resubscribed
	srv.Publish(room.ID, "hello")
	fmt.Println(<-events)
	// Output:
	// created r1 standup
	// {subscribed r1 }
	// server dropped 1 conn
	// {subscribed r1 }
	// {message r1 hello}
}
