import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from board.models import Run
from board.trail import FORMATS, trail_export


class _StdoutWriter:
    """Passes text through to the command's stdout unchanged: OutputWrapper would otherwise
    append a newline to every write that lacks one."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command

    def write(self, text: str) -> int:
        self.command.stdout.write(text, ending="")
        return len(text)


class Command(BaseCommand):
    help = "Export a run's trail (its checkpoints, oldest first) as CSV or JSON Lines."

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, required=True, metavar="ID", help="run id")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
        parser.add_argument("-o", "--output", metavar="FILE", help="standard output if omitted")

    def handle(self, *args, run: int, fmt: str, output: str | None, **options):
        found = Run.objects.filter(pk=run).first()
        if found is None:
            raise CommandError(f"no run with id {run}")
        if output is None:
            try:
                trail_export(run=found, fmt=fmt, out=_StdoutWriter(self))
            except BrokenPipeError:
                # The reader stopped early (`| head`): not an error worth a traceback.
                sys.stderr.close()
            return
        try:
            # newline="": the csv module writes its own \r\n line ends.
            with Path(output).open("w", encoding="utf-8", newline="") as handle:
                trail_export(run=found, fmt=fmt, out=handle)
        except OSError as error:
            raise CommandError(f"{output}: cannot write the file ({error.strerror})") from None
        self.stderr.write(f"wrote the trail of run {found.pk} to {output}")
