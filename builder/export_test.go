package builder

// WithClock replaces the clock, for expiry tests.
var WithClock = withClock
