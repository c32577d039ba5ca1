"""`vmabpf record`: events to a JSON Lines file (``recording.py``), for `vmabpf report` later and elsewhere."""

from __future__ import annotations

import click

from ..errors import VmabpfError, one_line_errors
from ..escape import escape
from ..options import PID, backend_option, children_option, duration_option, force_option, replace_option
from ..recording import RecordWriter, make_header, open_output
from ..session import StopFlag, backend_and_device, missing_note, open_tracer, prepare, trace_loop


@click.command()
@click.option("-o", "--output", required=True, metavar="FILE",
              help="the recording (JSON Lines), a new file; - for stdout")
@replace_option("FILE")
@click.option("-p", "--pid", type=PID, help="record this process (TGID); default: every process")
@children_option
@duration_option
@force_option
@backend_option
@one_line_errors
def record(output, replace, pid, children, duration, force, backend, use_adb, serial):
    """Record named-VMA events to FILE (JSON Lines: header, events, footer)
    for `vmabpf report`, here or on another machine.

    Ctrl-C, SIGTERM, --duration or the process exiting end the recording
    cleanly (footer written, exit 0).
    """
    if duration is not None and duration <= 0:
        raise VmabpfError("--duration must be a positive number of seconds", exit_code=2)
    if children and pid is None:
        raise VmabpfError("--children needs -p PID (without -p every process is recorded)", exit_code=2)

    pids = [pid] if pid is not None else []
    # the output first: an existing file is refused before anything else is tried
    fp, name, outfile = open_output(output, replace)
    writer = RecordWriter(fp, name, close_fp=False)
    why = "error"
    header_written = False
    try:
        backend, device = backend_and_device(backend, use_adb, serial)
        kinfo, plan = prepare(pids, None, force, backend=backend, device=device)

        with StopFlag() as stop, open_tracer(plan, kinfo, writer.write_event, device, pids=pids, children=children,
                                             filter_pids=bool(pids)) as tracer:
            writer.write_header(make_header(plan.to_json(), kinfo.release, kinfo.arch, pids, children))
            header_written = True
            who = f"PID {pid}{' and its children' if children else ''}" if pids else "all processes"
            click.echo(f"Recording named-VMA events of {who} to {escape(name)}"
                       f"{missing_note(plan)}... Hit Ctrl-C to end.", err=True)
            why = trace_loop(tracer, writer.write_event, pids, stop, duration, alive=device.alive if device else None)
    finally:
        if header_written:
            writer.close(why)
            if outfile:
                outfile.commit()
        elif outfile:
            # nothing recorded (the BPF program did not load): remove the file we made, and only that
            outfile.discard()
    if why == "exit":
        click.echo(f"PID {pid} exited; detached.", err=True)
    elif why == "ended":
        click.echo("the trace pipe closed (adb ended: device disconnected?); the recording is complete up to "
                   "then.", err=True)
    click.echo(f"Recorded {writer.events} events ({writer.lost} lost) to {escape(name)}.", err=True)
