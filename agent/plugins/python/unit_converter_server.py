#!/usr/bin/python3
"""Example out-of-process agent environment: an EnvironmentService server (proto/spargo/environment.proto).

It offers one tool, `convert_units`, converting a value between units of length (m, km, mi, ft, in), mass (kg, g,
lb, oz) or temperature (C, F, K). It needs Debian's python3-grpcio and python3-protobuf and the Python modules
that the build generates from the protos (build/proto/python). Run:

  PYTHONPATH=build/proto/python agent/plugins/python/unit_converter_server.py --port 50170 [--token-file FILE]

and add it to the agent environments:

  rollout { agent { remote { address: "127.0.0.1:50170" } } }

The contract: ListTools returns an OpenAI-style tools array as JSON; Call receives one call (name and JSON
arguments) and returns the text the model sees, with `error` set when the call could not be carried out.
"""
import argparse
import concurrent.futures
import json
import signal
import sys

import grpc
from spargo import environment_pb2

SERVICE = "spargo.agent.EnvironmentService"

LINEAR = {  # unit -> (dimension, factor to the base unit)
    "m": ("length", 1.0), "km": ("length", 1000.0), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
    "in": ("length", 0.0254), "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
}
TEMPERATURE = {"C", "F", "K"}

TOOLS = [{
    "type": "function",
    "function": {
        "name": "convert_units",
        "description": "Convert a value between units of length (m, km, mi, ft, in), mass (kg, g, lb, oz) or "
                       "temperature (C, F, K).",
        "parameters": {
            "type": "object",
            "properties": {
                "value": {"type": "number", "description": "The amount to convert."},
                "from_unit": {"type": "string", "description": "The unit of the value."},
                "to_unit": {"type": "string", "description": "The unit wanted."},
            },
            "required": ["value", "from_unit", "to_unit"],
        },
    },
}]


def to_kelvin(value, unit):
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def from_kelvin(value, unit):
    return {"C": value - 273.15, "F": (value - 273.15) * 9 / 5 + 32, "K": value}[unit]


def convert(arguments):
    """Returns (text, error)."""
    try:
        value = float(arguments["value"])
        source, target = str(arguments["from_unit"]), str(arguments["to_unit"])
    except (KeyError, TypeError, ValueError):
        return "convert_units needs a numeric 'value' and the units 'from_unit' and 'to_unit'", True
    if source in TEMPERATURE and target in TEMPERATURE:
        result = from_kelvin(to_kelvin(value, source), target)
    elif source in LINEAR and target in LINEAR and LINEAR[source][0] == LINEAR[target][0]:
        result = value * LINEAR[source][1] / LINEAR[target][1]
    else:
        return f"cannot convert {source} to {target}", True
    return f"{value:g} {source} = {result:.6g} {target}", False


def make_handler(token):
    def check_token(context):
        if token is not None and dict(context.invocation_metadata()).get("authorization") != "Bearer " + token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing bearer token")

    def list_tools(request, context):
        check_token(context)
        return environment_pb2.ListToolsResponse(tools_json=json.dumps(TOOLS))

    def call(request, context):
        check_token(context)
        if request.name != "convert_units":
            return environment_pb2.ToolCallResponse(text=f"unknown tool {request.name!r}", error=True)
        try:
            arguments = json.loads(request.arguments_json or "{}")
        except ValueError:
            return environment_pb2.ToolCallResponse(text="arguments are not JSON", error=True)
        if not isinstance(arguments, dict):
            return environment_pb2.ToolCallResponse(text="arguments must be a JSON object", error=True)
        text, error = convert(arguments)
        return environment_pb2.ToolCallResponse(text=text, error=error)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "ListTools": grpc.unary_unary_rpc_method_handler(
            list_tools,
            request_deserializer=environment_pb2.ListToolsRequest.FromString,
            response_serializer=environment_pb2.ListToolsResponse.SerializeToString),
        "Call": grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=environment_pb2.ToolCallRequest.FromString,
            response_serializer=environment_pb2.ToolCallResponse.SerializeToString),
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", help="require 'authorization: Bearer <token>' with this file's token")
    args = parser.parse_args()
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 4 << 20)])
    server.add_generic_rpc_handlers((make_handler(token),))
    address = f"{args.host}:{args.port}"
    if server.add_insecure_port(address) == 0:
        sys.exit(f"unit_converter_server: cannot listen on {address}")
    server.start()
    print(f"unit_converter_server: listening on {address}", flush=True)
    stop = lambda *_: server.stop(grace=2)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
