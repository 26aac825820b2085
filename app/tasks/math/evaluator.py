"""A safe evaluator for arithmetic expressions, with exact rationals. Never Python `eval`.

A small recursive-descent parser builds the tree and evaluates it in one pass over fractions.Fraction.
Only numbers, + - * / ^, parentheses and a few whitelisted functions are accepted; sizes are bounded
(expression length, nesting depth, digits per number, bits of every intermediate result, exponents),
so hostile input fails fast with ExpressionError instead of eating memory or time.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

MAX_CHARS = 500
MAX_DEPTH = 50  # nested parentheses, unary signs and powers together
MAX_DIGITS = 30  # per number literal
MAX_BITS = 2048  # numerator and denominator of every intermediate result
MAX_EXPONENT = 64

TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_]\w*)|(\*\*|[-+*/^(),]))")


class ExpressionError(ValueError):
    """The expression is not one this evaluator accepts, or its value cannot be computed."""


def _sqrt(x: Fraction) -> Fraction:
    if x < 0:
        raise ExpressionError("sqrt of a negative number")
    num, den = math.isqrt(x.numerator), math.isqrt(x.denominator)
    if num * num != x.numerator or den * den != x.denominator:
        raise ExpressionError(f"sqrt({x}) is not rational")
    return Fraction(num, den)


def _round(x: Fraction) -> Fraction:
    return Fraction(math.floor(x + Fraction(1, 2)))  # half up, as taught in school


FUNCTIONS = {"abs": (1, abs), "sqrt": (1, _sqrt), "floor": (1, lambda x: Fraction(math.floor(x))),
             "ceil": (1, lambda x: Fraction(math.ceil(x))), "round": (1, _round),
             "min": (None, min), "max": (None, max)}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    text = text.rstrip()
    while at < len(text):
        m = TOKEN_RE.match(text, at)
        if not m:
            raise ExpressionError(f"unexpected {text[at:at + 10].strip()!r} at position {at}")
        number, name, op = m.groups()
        out.append(("num", number) if number else ("name", name) if name else ("op", "^" if op == "**" else op))
        at = m.end()
    return out


def _checked(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise ExpressionError(f"an intermediate result is too large (over {MAX_BITS} bits)")
    return x


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        if exponent == Fraction(1, 2):
            return _sqrt(base)
        raise ExpressionError(f"non-integer exponent {exponent}")
    e = exponent.numerator
    if abs(e) > MAX_EXPONENT:
        raise ExpressionError(f"exponent {e} is over the limit of {MAX_EXPONENT}")
    if base == 0 and e < 0:
        raise ExpressionError("division by zero (0 to a negative power)")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if size * abs(e) > MAX_BITS:
        raise ExpressionError(f"a power is too large (over {MAX_BITS} bits)")
    return base ** e


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.at, self.depth = tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression")
        if op is not None and token != ("op", op):
            raise ExpressionError(f"expected {op!r}, found {token[1]!r}")
        self.at += 1
        return token

    def nested(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")

    def expr(self) -> Fraction:  # term (+|- term)*
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            right = self.term()
            value = _checked(value + right if op == "+" else value - right)
        return value

    def term(self) -> Fraction:  # power (*|/ power)*
        value = self.power()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            right = self.power()
            if op == "/" and right == 0:
                raise ExpressionError("division by zero")
            value = _checked(value * right if op == "*" else value / right)
        return value

    def power(self) -> Fraction:  # unary (^ power)?, right-associative
        self.nested()
        base = self.unary()
        if self.peek() == ("op", "^"):
            self.take()
            base = _checked(_power(base, self.power()))
        self.depth -= 1
        return base

    def unary(self) -> Fraction:
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = self.take()[1]
            self.nested()
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.atom()

    def atom(self) -> Fraction:
        kind, text = self.take()
        if kind == "num":
            if len(text) > MAX_DIGITS:
                raise ExpressionError(f"a number with over {MAX_DIGITS} digits")
            return Fraction(text)
        if kind == "name":
            if text not in FUNCTIONS:
                raise ExpressionError(f"unknown name {text!r} (functions: {', '.join(sorted(FUNCTIONS))})")
            arity, fn = FUNCTIONS[text]
            self.take("(")
            args = [self.expr()]
            while self.peek() == ("op", ","):
                self.take()
                args.append(self.expr())
            self.take(")")
            if arity is not None and len(args) != arity:
                raise ExpressionError(f"{text} takes {arity} argument(s), got {len(args)}")
            return _checked(fn(args[0]) if arity == 1 else fn(args))
        if text == "(":
            self.nested()
            value = self.expr()
            self.take(")")
            self.depth -= 1
            return value
        raise ExpressionError(f"unexpected {text!r}")


def evaluate(expression: str) -> Fraction:
    """The exact value of `expression`, or ExpressionError saying why not."""
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("empty expression")
    if len(expression) > MAX_CHARS:
        raise ExpressionError(f"expression of {len(expression)} characters, over the limit of {MAX_CHARS}")
    parser = _Parser(_tokens(expression))
    value = parser.expr()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()[1]!r} after a complete expression")
    return value


# -- answers ------------------------------------------------------------------------------------

PERCENT_RE = re.compile(r"百分之几|百分比|百分数|百分率|(?:几|多少)%")
COUNT = r"(?:几|多少)[个人辆条只次块本张箱盒袋组棵台件支把瓶桶趟天艘间套页名位双盆筐包根排行座枝颗]"
AT_LEAST_RE = re.compile(rf"(?:至少|最少)[^,.;?!，。；？！]*{COUNT}")
AT_MOST_RE = re.compile(rf"(?:最多|至多)[^,.;?!，。；？！]*{COUNT}")


def as_decimal(value: Fraction, places: int = 6) -> str:
    """Exact when the decimal terminates within `places`, else rounded; no trailing zeros."""
    with localcontext() as ctx:
        ctx.prec = 1000  # enough for any value within MAX_BITS
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        text = format(exact.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def terminates(value: Fraction) -> bool:
    """Whether the decimal expansion ends (the denominator has no prime factors but 2 and 5)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def format_answer(value: Fraction, question: str) -> dict:
    """The answer as a person would write it for this question: rounded up for "at least N <things>",
    down for "at most", a percentage when it asks for one; plus the exact fraction and the decimal."""
    shown = value
    if value.denominator != 1 and AT_LEAST_RE.search(question):
        shown = Fraction(math.ceil(value))
    elif value.denominator != 1 and AT_MOST_RE.search(question):
        shown = Fraction(math.floor(value))
    if PERCENT_RE.search(question):
        answer = as_decimal(shown * 100, 4) + "%"
    elif terminates(shown):
        answer = as_decimal(shown, 12)
    else:  # a repeating decimal: the fraction is the exact answer
        answer = f"{shown.numerator}/{shown.denominator}"
    return {"answer": answer, "answer_value": float(shown), "fraction": str(shown), "decimal": as_decimal(shown)}
