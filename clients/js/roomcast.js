// roomcast browser client (ES module): see docs/protocol.md.
export {};
