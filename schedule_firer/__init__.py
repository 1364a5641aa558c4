"""The schedule firer: turns due recurring schedules into tasks. Any number of replicas may run."""
