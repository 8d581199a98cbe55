// The daemon: config, schedules, queue, state, runner.
