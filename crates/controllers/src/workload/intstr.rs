//! `maxUnavailable` and `maxSurge` as ints or percentages, with upstream's rounding
//! (`k8s.io/apimachinery/pkg/util/intstr.GetScaledValueFromIntOrPercent` and the Deployment's
//! `deploymentutil.ResolveFenceposts`).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The value of an int-or-percent for `total` (upstream `GetScaledValueFromIntOrPercent`): an int is
/// itself; `"N%"` is `N * total / 100`, rounded up when `round_up`, down otherwise.
///
/// # Errors
/// A string that is not `<integer>%` (upstream: "invalid value for IntOrString: invalid type: string is
/// not a percentage").
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%').and_then(|d| d.parse().ok()).ok_or_else(|| {
                format!("invalid value for IntOrString: invalid type: string {s:?} is not a percentage")
            })?;
            let product = pct * i64::from(total);
            let v = if round_up {
                product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
            } else {
                product.div_euclid(100)
            };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// `(maxSurge, maxUnavailable)` as pod counts for `desired` replicas (upstream `ResolveFenceposts`): the
/// surge rounded up, unavailability rounded down, an absent value counting as 0; when both come to 0
/// (a small percentage rounded down), maxUnavailable is 1, "on the theory that surge might not work due
/// to quota".
///
/// # Errors
/// A malformed percentage ([`scaled_value`]).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// A StatefulSet's `rollingUpdate.maxUnavailable` as a pod count (upstream `getStatefulSetMaxUnavailable`):
/// absent is 1, a percentage rounds up, never below 1; a malformed value counts as 1 (validation refuses
/// one).
pub fn statefulset_max_unavailable(v: Option<&IntOrString>, replicas: i32) -> i32 {
    scaled_value(v.unwrap_or(&IntOrString::Int(1)), replicas, true)
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn percentages_round_as_upstream() {
        // (value, total, round_up) → result
        let cases = [
            (s("25%"), 10, true, Ok(3)),
            (s("25%"), 10, false, Ok(2)),
            (s("25%"), 1, true, Ok(1)),
            (s("25%"), 1, false, Ok(0)),
            (s("100%"), 7, false, Ok(7)),
            (s("0%"), 7, true, Ok(0)),
            (IntOrString::Int(4), 10, false, Ok(4)),
        ];
        for (v, total, up, want) in cases {
            assert_eq!(scaled_value(&v, total, up), want, "{v:?} of {total}, up={up}");
        }
        assert!(scaled_value(&s("3"), 10, true).is_err());
        assert!(scaled_value(&s("x%"), 10, true).is_err());
    }

    #[test]
    fn fenceposts_never_both_zero() {
        let q = s("25%");
        assert_eq!(resolve_fenceposts(Some(&q), Some(&q), 10), Ok((3, 2)));
        assert_eq!(resolve_fenceposts(Some(&q), Some(&q), 1), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(Some(&s("0%")), Some(&q), 1), Ok((0, 1)));
        assert_eq!(resolve_fenceposts(None, None, 3), Ok((0, 1)));
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 3),
            Ok((2, 0))
        );
    }

    #[test]
    fn statefulset_budget_is_at_least_one() {
        assert_eq!(statefulset_max_unavailable(None, 5), 1);
        assert_eq!(statefulset_max_unavailable(Some(&s("50%")), 5), 3);
        assert_eq!(statefulset_max_unavailable(Some(&IntOrString::Int(0)), 5), 1);
        assert_eq!(statefulset_max_unavailable(Some(&s("bad")), 5), 1);
    }
}
