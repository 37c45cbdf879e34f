"""The built-in ``arith`` dataset: grade-school arithmetic word problems made from templates.

Every problem comes with its exact answer and a correct step-by-step chain of thought whose
steps are separated by blank lines (the layout the Rethinker keeps), ending in ``\\boxed{}``.
The same seed always gives the same problems, so the demo needs no download.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemi", "Liam"]
ITEMS = [("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("book", "books"),
         ("pencil", "pencils"), ("cookie", "cookies"), ("shell", "shells"), ("card", "cards")]


@dataclass(frozen=True)
class ArithProblem:
    question: str
    answer: str
    cot: str


def _steps(*lines: str) -> str:
    return "\n\n".join(lines)


def _buy_and_give(r: random.Random) -> ArithProblem:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    start, bought, given = r.randint(5, 40), r.randint(2, 30), r.randint(1, 20)
    total = start + bought
    given = min(given, total)
    left = total - given
    q = (f"{name} has {start} {items}. {name} buys {bought} more and then gives {given} to a friend. "
         f"How many {items} does {name} have now?")
    cot = _steps(f"{name} starts with {start} {items}.",
                 f"After buying {bought} more, {name} has {start} + {bought} = {total} {items}.",
                 f"After giving away {given}, {name} has {total} - {given} = {left} {items}.",
                 f"The answer is \\boxed{{{left}}}.")
    return ArithProblem(q, str(left), cot)


def _groups(r: random.Random) -> ArithProblem:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    boxes, per_box, extra = r.randint(2, 12), r.randint(2, 15), r.randint(0, 9)
    in_boxes = boxes * per_box
    total = in_boxes + extra
    q = (f"{name} packs {boxes} boxes with {per_box} {items} in each box and has {extra} {items} left over. "
         f"How many {items} does {name} have in total?")
    cot = _steps(f"Each of the {boxes} boxes holds {per_box} {items}, so the boxes hold {boxes} x {per_box} = {in_boxes} {items}.",
                 f"Adding the {extra} left over gives {in_boxes} + {extra} = {total} {items}.",
                 f"The answer is \\boxed{{{total}}}.")
    return ArithProblem(q, str(total), cot)


def _share(r: random.Random) -> ArithProblem:
    name, (_, items) = r.choice(NAMES), r.choice(ITEMS)
    friends, each = r.randint(2, 9), r.randint(2, 12)
    total = friends * each
    q = (f"{name} shares {total} {items} equally among {friends} friends. "
         f"How many {items} does each friend get?")
    cot = _steps(f"There are {total} {items} to split among {friends} friends.",
                 f"Each friend gets {total} / {friends} = {each} {items}.",
                 f"The answer is \\boxed{{{each}}}.")
    return ArithProblem(q, str(each), cot)


def _price(r: random.Random) -> ArithProblem:
    name = r.choice(NAMES)
    qty_a, price_a, qty_b, price_b = r.randint(2, 8), r.randint(1, 9), r.randint(1, 6), r.randint(2, 15)
    paid = qty_a * price_a + qty_b * price_b
    bill = ((paid // 10) + 1) * 10 + r.choice([0, 10])
    change = bill - paid
    q = (f"{name} buys {qty_a} pens at {price_a} dollars each and {qty_b} notebooks at {price_b} dollars each, "
         f"and pays with {bill} dollars. How much change does {name} get, in dollars?")
    cot = _steps(f"The pens cost {qty_a} x {price_a} = {qty_a * price_a} dollars.",
                 f"The notebooks cost {qty_b} x {price_b} = {qty_b * price_b} dollars.",
                 f"Together that is {qty_a * price_a} + {qty_b * price_b} = {paid} dollars.",
                 f"The change is {bill} - {paid} = {change} dollars.",
                 f"The answer is \\boxed{{{change}}}.")
    return ArithProblem(q, str(change), cot)


def _speed(r: random.Random) -> ArithProblem:
    name = r.choice(NAMES)
    speed, hours, back = r.randint(3, 60), r.randint(2, 6), r.randint(1, 5)
    out, back_dist = speed * hours, speed * back
    total = out + back_dist
    q = (f"{name} travels at {speed} km per hour for {hours} hours, then another {back} hours at the same speed. "
         f"How many km does {name} travel in total?")
    cot = _steps(f"In the first {hours} hours {name} travels {speed} x {hours} = {out} km.",
                 f"In the next {back} hours {name} travels {speed} x {back} = {back_dist} km.",
                 f"In total that is {out} + {back_dist} = {total} km.",
                 f"The answer is \\boxed{{{total}}}.")
    return ArithProblem(q, str(total), cot)


TEMPLATES: list[Callable[[random.Random], ArithProblem]] = [_buy_and_give, _groups, _share, _price, _speed]


def generate_arith(num_problems: int, seed: int = 0) -> list[ArithProblem]:
    """``num_problems`` distinct problems; the same seed gives the same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    problems: list[ArithProblem] = []
    attempts = 0
    while len(problems) < num_problems:
        attempts += 1
        if attempts > num_problems * 50:
            raise RuntimeError(f"arith: could not make {num_problems} distinct problems")
        problem = TEMPLATES[len(problems) % len(TEMPLATES)](rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems
