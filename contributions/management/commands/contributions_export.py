"""Export accepted records of one kind as JSON Lines (never deleted records, nor ones quoting others)."""

from django.core.management.base import BaseCommand, CommandError

from contributions.models import Record
from contributions.selectors import export_lines


class Command(BaseCommand):
    help = "Write accepted, undeleted records of --kind as JSON Lines with their SHA-256 to stdout or --output."

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, help=f"one of {', '.join(Record.Kind.values)}")
        parser.add_argument("--output", help="a file to write (default: stdout)")

    def handle(self, *args, kind: str, output: str | None, **options):
        if kind not in Record.Kind.values:
            raise CommandError(f"--kind must be one of {', '.join(Record.Kind.values)}, not {kind!r}.")
        count = 0
        stream = open(output, "w", encoding="utf-8") if output else self.stdout
        try:
            for line in export_lines(kind=kind):
                stream.write(line + "\n")
                count += 1
        finally:
            if output:
                stream.close()
        self.stderr.write(f"exported {count} {kind} records")
