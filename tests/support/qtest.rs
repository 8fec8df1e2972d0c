//! Qt's `QVERIFY` and `QCOMPARE` for the ported Qt autotests (`tests/qt_autotests_*.rs`):
//! a failed check ends the trial with the condition's text, file and line.
#![allow(unused_macros)] // each test crate uses what it needs

/// Qt's `QVERIFY`: fail the case (with the condition's text) unless `cond`.
macro_rules! qverify {
    ($cond:expr) => {
        if !$cond {
            return Err(format!("{}:{}: QVERIFY({}) failed", file!(), line!(), stringify!($cond)).into());
        }
    };
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!(
                "{}:{}: QVERIFY({}) failed: {}",
                file!(),
                line!(),
                stringify!($cond),
                format!($($why)+)
            )
            .into());
        }
    };
}

/// Qt's `QCOMPARE`: fail the case unless `got == want`, showing both.
macro_rules! qcompare {
    ($got:expr, $want:expr) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!(
                "{}:{}: QCOMPARE({}, {}) failed: {:?} != {:?}",
                file!(),
                line!(),
                stringify!($got),
                stringify!($want),
                got,
                want
            )
            .into());
        }
    }};
}
