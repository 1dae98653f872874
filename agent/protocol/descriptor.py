"""The wire contract as data: describe agent.proto, snapshot a release, and list what would break an old peer.

`python -m agent.protocol.descriptor` prints the snapshot of the current proto (written to
`agent/protocol/released/agent.v1.json` when a release ships). `breaking_changes(released, current)` names
every change an agent or gateway of the released version could not follow: a message, field, enum value,
service or method removed, and a field renumbered, renamed or retyped. New messages and fields are fine.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor

from agent import __version__
from agent.protocol.gen.janction.agent.v1 import agent_pb2

RELEASED = Path(__file__).resolve().parent / "released" / "agent.v1.json"


def _file_proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _messages(prefix: str, types, out: dict[str, Any]) -> None:
    for message in types:
        name = f"{prefix}.{message.name}"
        oneofs = [oneof.name for oneof in message.oneof_decl]
        out[name] = {
            str(field.number): {
                "name": field.name,
                "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
                "type_name": field.type_name,
                "label": descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
                "oneof": oneofs[field.oneof_index] if field.HasField("oneof_index") else "",
            }
            for field in message.field
        }
        _messages(name, message.nested_type, out)


def describe(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    """Return the messages (fields by number), enums (values by number) and services of a proto file."""
    package = f".{proto.package}"
    messages: dict[str, Any] = {}
    _messages(package, proto.message_type, messages)
    enums = {f"{package}.{enum.name}": {str(v.number): v.name for v in enum.value} for enum in proto.enum_type}
    services = {
        f"{package}.{service.name}": {
            method.name: {
                "input": method.input_type,
                "output": method.output_type,
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for method in service.method
        }
        for service in proto.service
    }
    return {"messages": messages, "enums": enums, "services": services}


def snapshot(file: FileDescriptor = agent_pb2.DESCRIPTOR) -> dict[str, Any]:
    """Return what a release records: the readable description and the serialized descriptor itself."""
    proto = _file_proto(file)
    return {
        "agent_version": __version__,
        "file": proto.name,
        "description": describe(proto),
        "file_descriptor": base64.b64encode(proto.SerializeToString(deterministic=True)).decode(),
    }


def breaking_changes(released: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Return every change from `released` to `current` (two descriptions) that an older peer cannot follow."""
    problems = []
    for message, fields in released["messages"].items():
        now = current["messages"].get(message)
        if now is None:
            problems.append(f"message {message} was removed")
            continue
        for number, field in fields.items():
            new = now.get(number)
            if new is None:
                problems.append(f"{message} field {number} ({field['name']}) was removed or renumbered")
            elif new != field:
                changed = ", ".join(f"{key} {field[key]!r} -> {new[key]!r}" for key in field if new[key] != field[key])
                problems.append(f"{message} field {number} ({field['name']}) changed: {changed}")
    for enum, values in released["enums"].items():
        now = current["enums"].get(enum)
        if now is None:
            problems.append(f"enum {enum} was removed")
            continue
        problems += [
            f"{enum} value {number} ({name}) was removed or renamed"
            for number, name in values.items()
            if now.get(number) != name
        ]
    for service, methods in released["services"].items():
        now = current["services"].get(service, {})
        for method, signature in methods.items():
            if now.get(method) != signature:
                problems.append(f"{service}.{method} was removed or its signature changed")
    return problems


def released_snapshot(path: Path = RELEASED) -> dict[str, Any]:
    """Return the snapshot of the last released proto."""
    return json.loads(path.read_text())


def message_classes(snapshot_: dict[str, Any]) -> dict[str, type]:
    """Return the message classes of a snapshot's proto, built apart from the current ones (an older peer)."""
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(snapshot_["file_descriptor"]))
    file = pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{name}"))
        for name in file.message_types_by_name
    }


def main() -> int:
    """Print the snapshot of the current proto as JSON."""
    sys.stdout.write(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
