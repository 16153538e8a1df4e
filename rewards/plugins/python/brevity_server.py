#!/usr/bin/python3
"""Example out-of-process reward plugin: a RewardService server (proto/spargo/reward.proto) in Python.

It scores each completion by brevity: 1.0 when it has at most --budget words, budget/words above that; an
empty completion is NOT_APPLICABLE. It needs Debian's python3-grpcio and python3-protobuf and the Python
modules that the build generates from the protos (build/proto/python). Run:

  PYTHONPATH=build/proto/python rewards/plugins/python/brevity_server.py --port 50160 [--budget 200] \
      [--token-file FILE]

and add a pipeline component:

  components { name: "brevity" weight: 0.2 remote { address: "127.0.0.1:50160" } }

The contract: spargo sends one group per ScoreRequest and expects one ScoreGroupResponse with exactly one
SampleScore per completion, in order. Statuses other than OK say why there is no plain judgement.
"""
import argparse
import concurrent.futures
import signal
import sys

import grpc
from spargo import reward_pb2

SERVICE = "spargo.reward.RewardService"


def score_group(group, budget):
    response = reward_pb2.ScoreGroupResponse(group_id=group.group_id)
    for completion in group.completions:
        words = len(completion.text.split())
        sample = response.scores.add()
        if words == 0:
            sample.status = reward_pb2.NOT_APPLICABLE
            sample.detail = "empty completion"
            continue
        sample.score = 1.0 if words <= budget else budget / words
        sample.components["brevity"] = sample.score
        sample.status = reward_pb2.OK
    return response


def make_handler(budget, token):
    def score(request, context):
        if token is not None:
            metadata = dict(context.invocation_metadata())
            if metadata.get("authorization") != "Bearer " + token:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing bearer token")
        if not request.groups:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has no groups")
        return reward_pb2.ScoreResponse(groups=[score_group(g, budget) for g in request.groups])

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Score": grpc.unary_unary_rpc_method_handler(
            score,
            request_deserializer=reward_pb2.ScoreRequest.FromString,
            response_serializer=reward_pb2.ScoreResponse.SerializeToString),
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--budget", type=int, default=200, help="words allowed before the score falls")
    parser.add_argument("--token-file", help="require 'authorization: Bearer <token>' with this file's token")
    args = parser.parse_args()
    if args.budget <= 0:
        parser.error("--budget must be positive")
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((make_handler(args.budget, token),))
    address = f"{args.host}:{args.port}"
    if server.add_insecure_port(address) == 0:
        sys.exit(f"brevity_server: cannot listen on {address}")
    server.start()
    print(f"brevity_server: listening on {address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=2))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
