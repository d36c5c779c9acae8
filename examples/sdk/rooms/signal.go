package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/transport"
)

// Event is a message of the signalling channel: "subscribed" (the server
// took a Subscribe) or "message".
type Event struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Data string `json:"data,omitempty"`
}

// Signal is the signalling channel: one websocket that lifeline keeps up
// across failures, redialled with a fresh token, on which every room
// subscribed is subscribed again after each reconnect. Safe for concurrent
// use; Close it.
type Signal struct {
	s     *transport.WebSocketSession
	mu    sync.Mutex
	rooms map[string]bool
}

// Signal opens the signalling channel. onEvent gets every event, in order,
// one at a time, on the channel's goroutine (it must not block for long).
func (c *Client) Signal(onEvent func(Event)) (*Signal, error) {
	sig := &Signal{rooms: map[string]bool{}}
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL:       "ws" + strings.TrimPrefix(c.base, "http") + "/signal",
		Dialer:    c.wsd,
		OnConnect: sig.resubscribe,
		OnMessage: func(_ int, data []byte) {
			var ev Event
			if json.Unmarshal(data, &ev) == nil {
				onEvent(ev)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	sig.s = s
	return sig, nil
}

// Subscribe subscribes to room's events, now and after every reconnect.
// It returns once the subscribe was written on a connection (waiting for
// one, within ctx).
func (s *Signal) Subscribe(ctx context.Context, room string) error {
	s.mu.Lock()
	s.rooms[room] = true
	s.mu.Unlock()
	for {
		err := s.s.WriteMessageWhenConnected(ctx, websocket.TextMessage, subscribeMsg(room))
		if !errors.Is(err, transport.ErrDisconnected) {
			return err
		}
	}
}

// WaitConnected waits until the channel is connected (nil), closed, or ctx ends.
func (s *Signal) WaitConnected(ctx context.Context) error { return s.s.WaitConnected(ctx) }

// Close closes the channel and waits for its goroutines.
func (s *Signal) Close() error { return s.s.Close() }

func (s *Signal) resubscribe(_ context.Context, conn *websocket.Conn) error {
	s.mu.Lock()
	rooms := slices.Collect(maps.Keys(s.rooms))
	s.mu.Unlock()
	for _, room := range rooms {
		if err := conn.WriteMessage(websocket.TextMessage, subscribeMsg(room)); err != nil {
			return err
		}
	}
	return nil
}

func subscribeMsg(room string) []byte {
	b, _ := json.Marshal(map[string]string{"op": "subscribe", "room": room})
	return b
}
