// Package fakerooms is a real "rooms" service on a loopback port, for the
// tests and the example of the rooms SDK (examples/sdk/rooms). It speaks
// what a small company API speaks, with switches that inject the faults
// of lifeline's incidents:
//
//	POST /token      {"api_key": k} → {"access_token": t, "expires_in": seconds}
//	POST /rooms      {"name": n} with an Idempotency-Key header → 201 and the room (200 and the same room when the key was seen)
//	GET  /rooms/{id} → the room, or 404
//	GET  /rooms      → every room, oldest first
//	GET  /signal     websocket; client sends {"op":"subscribe","room":id}, server answers
//	                 {"type":"subscribed","room":id} (once per conn and room: a repeated
//	                 subscribe is a no-op) and then sends {"type":"message","room":id,"data":d}
//	                 for each Publish to the room
//
// Every path but /token needs "Authorization: Bearer t" with a token that
// has not expired (Config.TokenTTL) nor been revoked (ExpireTokens): else
// 401. Faults: [Server.Fail] (503 with Retry-After), [Server.HoldNext]
// (an answer lost after the work was done), [Server.DropEvery] and
// [Server.DropAll] (websocket conns cut), [Server.ExpireTokens], and the
// hangs of [HangAfterAccept] and [HangConnect], which put a faultnet
// server beside this one on another loopback IP and the same port.
package fakerooms
