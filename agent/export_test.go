package agent

import "time"

// SetConfigRetry shortens how often a missing network config is looked up again.
func SetConfigRetry(a *Agent, d time.Duration) { a.configRetry = d }
