/*
 * monitor_proto.h - what hedged (instance.c) and hedge-monitor (monitor.c)
 * agree on, and all either needs of the other. The monitor includes this and
 * the runtime library, nothing else of hedged (daemon.h names the broker).
 *
 * An instance dir <state>/instances/<id>/ holds:
 *   monitor.json  what to run: {name, spec, log, log_max_bytes}, written by hedged
 *   monitor.lock  flock'ed by hedged before the fork, held by the monitor for its whole life
 *   state.json    pids, start time, run dir and secrets tmpfs, written by the monitor once the workload runs
 *   exit.json     the exit record, written (atomically) by the monitor as its last act
 *   ctl.sock      "signal N" -> "ok"; "stats" -> "ok CPU_NS MEMORY_BYTES PIDS";
 *                 "secrets NAME" -> "ok" once that secret's files are rewritten; else "err MESSAGE"
 * The start report goes to fd 3: "ok PID\n" once the command exec'd, or "err CODE MESSAGE\n".
 */
#ifndef HEDGE_DAEMON_MONITOR_PROTO_H
#define HEDGE_DAEMON_MONITOR_PROTO_H

#define HD_MONITOR_REPORT_FD 3 /* the start report's pipe */
#define HD_MONITOR_LOCK_FD 4   /* monitor.lock, locked */

#define HD_MONITOR_SPEC_FILE "monitor.json"
#define HD_MONITOR_LOCK_FILE "monitor.lock"
#define HD_MONITOR_STATE_FILE "state.json"
#define HD_MONITOR_EXIT_FILE "exit.json"
#define HD_MONITOR_CTL_SOCKET "ctl.sock"

#endif
