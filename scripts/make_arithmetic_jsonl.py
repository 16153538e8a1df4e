#!/usr/bin/env python3
"""Writes a verifiable arithmetic dataset as spargo JSONL task files (one task per line, see JsonlTasks in
proto/spargo/config.proto): {"id", "domain": "reasoning", "prompt", "answer", "language": "en"}, with disjoint
training and held-out files. The answer is the number alone; the reasoning pipeline's math_answer reward reads the
model's final \\boxed{} answer.

  python3 scripts/make_arithmetic_jsonl.py --out-dir data/arith --train 20000 --heldout 512 --digits 3 --seed 1
"""
import argparse
import json
import os
import random


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--train", type=int, default=20000, help="training tasks")
    p.add_argument("--heldout", type=int, default=512, help="held-out tasks")
    p.add_argument("--digits", type=int, default=3, help="largest operand has this many digits")
    p.add_argument("--operators", default="+-", help="any of + - *")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.train <= 0 or a.heldout < 0 or a.digits <= 0 or not a.operators or set(a.operators) - set("+-*"):
        p.error("--train > 0, --heldout >= 0, --digits > 0, --operators from + - *")
    rng = random.Random(a.seed)
    top = 10 ** a.digits - 1
    space = (top + 1) ** 2 * len(a.operators)
    if a.train + a.heldout > space // 2:
        p.error(f"{a.train + a.heldout} tasks asked from only {space} distinct problems")
    seen = set()
    tasks = []
    while len(tasks) < a.train + a.heldout:
        x, y, op = rng.randint(0, top), rng.randint(0, top), rng.choice(a.operators)
        if (x, op, y) in seen:
            continue
        seen.add((x, op, y))
        value = x + y if op == "+" else x - y if op == "-" else x * y
        tasks.append({"id": f"{x}{op}{y}", "domain": "reasoning",
                      "prompt": f"What is {x} {op} {y}? Put the final answer in \\boxed{{}}.",
                      "answer": str(value), "language": "en"})
    os.makedirs(a.out_dir, exist_ok=True)
    for name, part in (("train.jsonl", tasks[:a.train]), ("heldout.jsonl", tasks[a.train:])):
        with open(os.path.join(a.out_dir, name), "w", encoding="utf-8") as f:
            for t in part:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"wrote {a.train} training and {a.heldout} held-out tasks to {a.out_dir}")


if __name__ == "__main__":
    main()
