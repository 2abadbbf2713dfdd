//! Kubernetes resource quantities (`200Mi`, `1.5Gi`, `100m`, `1e3`) as numbers.
//!
//! Mirrors the grammar of upstream `k8s.io/apimachinery/pkg/api/resource.ParseQuantity`:
//! a signed decimal number followed by a binary-SI suffix (`Ki`…`Ei`), a decimal-SI suffix
//! (`n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`).
//! Values are returned as `f64` in base units (bytes for storage, cores for CPU): exact for
//! every integral quantity below 2^53, which is what comparisons of storage requests need.

/// The value of `q` in base units, or `None` when `q` is not a valid quantity.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 || num[1..].contains(['+', '-']) {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

/// Whether `q` is a valid non-negative quantity.
pub fn is_valid_non_negative(q: &str) -> bool {
    parse(q).is_some_and(|v| v >= 0.0)
}

/// Storage `q` in whole bytes, rounded up (upstream `Quantity.Value()` rounds up too), or `None`.
pub fn bytes(q: &str) -> Option<u64> {
    parse(q)
        .filter(|v| *v >= 0.0 && v.is_finite())
        .map(|v| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(parse("200Mi"), Some(200.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("-2k"), Some(-2000.0));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        for bad in ["", "Mi", "1MB", "1..2", "1-2", "abc", "1e"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(!is_valid_non_negative("-1Gi"));
    }
}
