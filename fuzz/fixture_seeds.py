#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, made from the reference fixtures at run time (they are never committed).

Usage: fixture_seeds.py FIXTURES_DIR OUT_DIR [PROJECT_ROOT]
Writes OUT_DIR/<target>/<name> for the targets whose inputs the fixtures can give:
  dsml_fuzzer, completion_parser_fuzzer: the assistant turns of dsv32-chat/test_output.txt;
  agent_answer_fuzzer, score_json_fuzzer: those turns with test_input.json's tools and a reference built from the
    tool calls that the turn makes (the separator of multi-field inputs is "\\n---\\n", as in fuzz/fuzz_util.h);
  tokenizer_fuzzer: bpe-tiny-a/tokenizer.json cut to its first 400 ids (and the merges among them), with each
    text of cases.jsonl;
  safetensors_fuzzer: the smallest tensors of the dsv32-tiny-a files, rewritten as small safetensors files;
  text_proto_fuzzer, experiment_config_fuzzer: the project's configs/*.txtpb (PROJECT_ROOT given).
Missing fixtures are skipped.
"""
import json
import os
import struct
import sys

SEP = "\n---\n"
EOS = "<｜end▁of▁sentence｜>"


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def assistant_turns(text):
    """The completions a model would have generated: each piece that ends in an end-of-sentence token."""
    turns = []
    for piece in text.split(EOS)[:-1]:
        start = max(piece.rfind("<｜Assistant｜>") + len("<｜Assistant｜>") if "<｜Assistant｜>" in piece else -1,
                    piece.rfind("</function_results>") + len("</function_results>")
                    if "</function_results>" in piece else -1)
        if start < 0:
            continue
        turn = piece[start:].lstrip("\n")
        if turn.startswith("<think>"):
            turn = turn[len("<think>"):]  # thinking mode: the prompt ended with "<think>"
        turns.append(turn + EOS)
    return turns


def chat_seeds(fixtures, out):
    base = os.path.join(fixtures, "dsv32-chat")
    try:
        text = open(os.path.join(base, "test_output.txt"), encoding="utf-8").read()
        conv = json.load(open(os.path.join(base, "test_input.json"), encoding="utf-8"))
    except OSError:
        return
    turns = assistant_turns(text)
    calls_per_turn = [m.get("tool_calls", []) for m in conv["messages"] if m["role"] == "assistant"]
    tools = json.dumps(conv["tools"], ensure_ascii=False)
    for i, turn in enumerate(turns):
        write(out, "dsml_fuzzer", f"turn{i}", turn)
        write(out, "completion_parser_fuzzer", f"turn{i}", turn)
        calls = calls_per_turn[i] if i < len(calls_per_turn) else []
        required = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                    for c in calls]
        reference = {"calls": required, "ordered": True, "max_calls": len(required) + 1}
        if not calls:
            reference = {"answer": turn.split("</think>")[-1].replace(EOS, "").strip()}
        ref = json.dumps(reference, ensure_ascii=False)
        write(out, "agent_answer_fuzzer", f"turn{i}", ref + SEP + tools + SEP + turn)
        line = {"domain": "agent", "prompt": "weather", "answer": ref, "tools": conv["tools"],
                "completions": [turn, {"text": turn, "num_tokens": 40, "finish_reason": "stop",
                                       "tool_calls": [c["function"] for c in calls]}]}
        write(out, "score_json_fuzzer", f"turn{i}", json.dumps(line, ensure_ascii=False))


def tokenizer_seeds(fixtures, out):
    base = os.path.join(fixtures, "bpe-tiny-a")
    try:
        tok = json.load(open(os.path.join(base, "tokenizer.json"), encoding="utf-8"))
        cases = [json.loads(l) for l in open(os.path.join(base, "cases.jsonl"), encoding="utf-8") if l.strip()]
    except OSError:
        return
    keep = 400
    vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < keep}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    tok["added_tokens"] = [dict(t, id=keep + k) for k, t in enumerate(tok["added_tokens"])]
    small = json.dumps(tok, ensure_ascii=False)
    for i, case in enumerate(cases):
        write(out, "tokenizer_fuzzer", f"case{i}", small + SEP + case["text"])


def safetensors_file(tensors, metadata):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors file."""
    header, blob = {"__metadata__": metadata}, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


def safetensors_seeds(fixtures, out):
    for name in ("model.safetensors", "reference.safetensors"):
        try:
            raw = open(os.path.join(fixtures, "dsv32-tiny-a", name), "rb").read()
        except OSError:
            continue
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        meta = header.pop("__metadata__", {})
        entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0])
        picked = []
        for tname, e in entries[:4]:
            b, end = e["data_offsets"]
            if end - b > 4096:
                break
            picked.append((tname, e["dtype"], e["shape"], raw[8 + n + b:8 + n + end]))
        if picked:
            write(out, "safetensors_fuzzer", name.replace(".safetensors", ""), safetensors_file(picked, meta))


def config_seeds(root, out):
    configs = os.path.join(root, "configs")
    for name in sorted(os.listdir(configs)) if os.path.isdir(configs) else []:
        if name.endswith(".txtpb"):
            data = open(os.path.join(configs, name), "rb").read()
            if len(data) <= 8192:
                write(out, "text_proto_fuzzer", name, data)
                write(out, "experiment_config_fuzzer", name, data)


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    chat_seeds(fixtures, out)
    tokenizer_seeds(fixtures, out)
    safetensors_seeds(fixtures, out)
    if len(sys.argv) > 3:
        config_seeds(sys.argv[3], out)
    made = {t: len(os.listdir(os.path.join(out, t))) for t in sorted(os.listdir(out))} if os.path.isdir(out) else {}
    print("fixture seeds:", ", ".join(f"{t} {n}" for t, n in made.items()))


if __name__ == "__main__":
    main()
