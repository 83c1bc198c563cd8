//! Pure planning and the migration state machine: no I/O, no clock.
