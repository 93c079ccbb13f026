//! The `plural=` expression of a gettext `Plural-Forms` header: a C expression in `n` that gives
//! the index of the plural form to use.

use thiserror::Error;

/// Why a `Plural-Forms` expression was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("plural expression: {0}")]
pub(crate) struct PluralError(&'static str);

/// A parsed plural expression.
#[derive(Debug, Clone)]
pub(crate) struct Plural(Expr);

#[derive(Debug, Clone)]
enum Expr {
    N,
    Num(u64),
    Not(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Binary operators by precedence level, loosest first (C's order).
const LEVELS: [&[(&str, Op)]; 6] = [
    &[("||", Op::Or)],
    &[("&&", Op::And)],
    &[("==", Op::Eq), ("!=", Op::Ne)],
    &[("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)],
    &[("+", Op::Add), ("-", Op::Sub)],
    &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Rem)],
];

/// Deepest nesting accepted (the real formulas need about 10).
const MAX_DEPTH: usize = 64;

impl Plural {
    /// Parses the expression after `plural=` (a trailing `;` is allowed).
    pub(crate) fn parse(src: &str) -> Result<Self, PluralError> {
        let mut p = Parser {
            s: src.trim().trim_end_matches(';').as_bytes(),
            i: 0,
            depth: 0,
        };
        let e = p.ternary()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(PluralError("unexpected text after the expression"));
        }
        Ok(Plural(e))
    }

    /// The plural form index for `n`.
    pub(crate) fn index(&self, n: u64) -> usize {
        usize::try_from(eval(&self.0, n)).unwrap_or(0)
    }
}

fn eval(e: &Expr, n: u64) -> u64 {
    match e {
        Expr::N => n,
        Expr::Num(v) => *v,
        Expr::Not(a) => u64::from(eval(a, n) == 0),
        Expr::If(c, a, b) => {
            if eval(c, n) != 0 {
                eval(a, n)
            } else {
                eval(b, n)
            }
        }
        Expr::Bin(op, a, b) => {
            let (x, y) = (eval(a, n), eval(b, n));
            match op {
                Op::Or => u64::from(x != 0 || y != 0),
                Op::And => u64::from(x != 0 && y != 0),
                Op::Eq => u64::from(x == y),
                Op::Ne => u64::from(x != y),
                Op::Lt => u64::from(x < y),
                Op::Le => u64::from(x <= y),
                Op::Gt => u64::from(x > y),
                Op::Ge => u64::from(x >= y),
                Op::Add => x.wrapping_add(y),
                Op::Sub => x.wrapping_sub(y),
                Op::Mul => x.wrapping_mul(y),
                Op::Div => x.checked_div(y).unwrap_or(0),
                Op::Rem => x.checked_rem(y).unwrap_or(0),
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    fn deeper(&mut self) -> Result<(), PluralError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(PluralError("nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn ternary(&mut self) -> Result<Expr, PluralError> {
        self.deeper()?;
        let cond = self.binary(0)?;
        let e = if self.eat("?") {
            let a = self.ternary()?;
            if !self.eat(":") {
                return Err(PluralError("`?` without `:`"));
            }
            let b = self.ternary()?;
            Expr::If(Box::new(cond), Box::new(a), Box::new(b))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(e)
    }

    fn binary(&mut self, level: usize) -> Result<Expr, PluralError> {
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut lhs = self.binary(level + 1)?;
        'outer: loop {
            for (tok, op) in ops.iter() {
                // `<` must not swallow the start of `<=`, nor `!` of `!=` be taken for `not`.
                if self.peek_op(tok) {
                    self.i += tok.len();
                    let rhs = self.binary(level + 1)?;
                    lhs = Expr::Bin(*op, Box::new(lhs), Box::new(rhs));
                    continue 'outer;
                }
            }
            return Ok(lhs);
        }
    }

    fn peek_op(&mut self, tok: &str) -> bool {
        self.ws();
        let rest = &self.s[self.i..];
        if !rest.starts_with(tok.as_bytes()) {
            return false;
        }
        // A one-character comparison followed by `=` is the two-character one.
        !(tok.len() == 1 && matches!(tok, "<" | ">") && rest.get(1) == Some(&b'='))
    }

    fn unary(&mut self) -> Result<Expr, PluralError> {
        self.ws();
        if self.s.get(self.i) == Some(&b'!') && self.s.get(self.i + 1) != Some(&b'=') {
            self.i += 1;
            self.deeper()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        if self.eat("(") {
            let e = self.ternary()?;
            if !self.eat(")") {
                return Err(PluralError("`(` without `)`"));
            }
            return Ok(e);
        }
        if self.eat("n") {
            return Ok(Expr::N);
        }
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|d| d.parse().ok())
            .map(Expr::Num)
            .ok_or(PluralError("expected n, a number or `(`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forms(expr: &str, ns: &[u64]) -> Vec<usize> {
        let p = Plural::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        ns.iter().map(|&n| p.index(n)).collect()
    }

    #[test]
    fn the_formulas_of_the_snikket_languages() {
        let ns = [0, 1, 2, 3, 4, 5, 11, 12, 14, 21, 22, 25, 101, 111, 112];
        // English, German, Danish, Swedish, Italian, Spanish.
        assert_eq!(
            forms("(n != 1)", &ns),
            [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        // French.
        assert_eq!(
            forms("(n > 1);", &ns),
            [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        // Indonesian, Chinese, Japanese.
        assert_eq!(forms("0", &ns), [0; 15]);
        // Polish.
        assert_eq!(
            forms(
                "(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)",
                &ns
            ),
            [2, 0, 1, 1, 1, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2]
        );
        // Russian and Ukrainian.
        assert_eq!(
            forms("(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)", &ns),
            [2, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2, 0, 2, 2]
        );
        // Arabic: six forms.
        assert_eq!(
            forms(
                "(n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 : n%100>=11 ? 4 : 5)",
                &[0, 1, 2, 3, 11, 100, 102]
            ),
            [0, 1, 2, 3, 4, 5, 5]
        );
        // Arithmetic, unary not and C precedence.
        assert_eq!(forms("!n + 2 * 3 - 6 / 2", &[0, 5]), [4, 3]);
        assert_eq!(forms("n % 0 + n / 0", &[7]), [0]);
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            "",
            "n ==",
            "(n",
            "n ? 1",
            "x",
            "n != 1 junk",
            "1 + + ",
            &"(".repeat(500),
        ] {
            assert!(Plural::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
