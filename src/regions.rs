//! The one region-to-jurisdiction table. Replication between mainland China and anywhere else is
//! cross-border, which TCR refuses ("Cross-border instance replication is not supported") and the
//! operator refuses for every provider before any work starts.

/// Legal area a region belongs to, for the cross-border rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jurisdiction {
    /// Mainland China (Huawei/Alibaba/AWS `cn-*` regions other than Hong Kong; Tencent mainland `ap-*` cities).
    MainlandChina,
    /// Everywhere else, including Hong Kong, Macau, Taiwan and region names this table does not know.
    Outside,
}

/// Tencent Cloud mainland-China region prefixes (`ap-<city>`, with suffixes such as `-fsi`, `-adc`, `-open`).
const TENCENT_MAINLAND: &[&str] = &[
    "ap-beijing",
    "ap-shanghai",
    "ap-guangzhou",
    "ap-shenzhen",
    "ap-chengdu",
    "ap-chongqing",
    "ap-nanjing",
    "ap-tianjin",
    "ap-qingyuan",
    "ap-hangzhou",
    "ap-wuhan",
    "ap-changsha",
    "ap-zhengzhou",
    "ap-jinan",
    "ap-hefei",
    "ap-fuzhou",
    "ap-xian",
    "ap-shijiazhuang",
    "ap-shenyang",
    "ap-taiyuan",
];

/// `cn-*` regions that are not in mainland China.
const CN_PREFIXED_OUTSIDE: &[&str] = &["cn-hongkong", "cn-hong-kong", "cn-macau", "cn-taiwan"];

/// Regions where TCR instance replication is not offered (seed: "not supported in the Taiwan (China) region").
pub const TCR_REPLICATION_UNSUPPORTED: &[&str] = &["ap-taipei"];

/// The jurisdiction of a region id.
pub fn jurisdiction(region: &str) -> Jurisdiction {
    let matches_prefix = |p: &&str| region == *p || region.starts_with(&format!("{p}-"));
    if CN_PREFIXED_OUTSIDE.iter().any(matches_prefix) {
        return Jurisdiction::Outside;
    }
    if region.starts_with("cn-") || TENCENT_MAINLAND.iter().any(matches_prefix) {
        return Jurisdiction::MainlandChina;
    }
    Jurisdiction::Outside
}

/// True when copying between the two regions crosses the mainland-China border.
pub fn is_cross_border(a: &str, b: &str) -> bool {
    jurisdiction(a) != jurisdiction(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (region, want) in [
            ("cn-north-4", Jurisdiction::MainlandChina),
            ("cn-hangzhou", Jurisdiction::MainlandChina),
            ("cn-northwest-1", Jurisdiction::MainlandChina),
            ("ap-guangzhou", Jurisdiction::MainlandChina),
            ("ap-shanghai-fsi", Jurisdiction::MainlandChina),
            ("ap-beijing", Jurisdiction::MainlandChina),
            ("cn-hongkong", Jurisdiction::Outside),
            ("ap-hongkong", Jurisdiction::Outside),
            ("ap-taipei", Jurisdiction::Outside),
            ("ap-singapore", Jurisdiction::Outside),
            ("eu-frankfurt", Jurisdiction::Outside),
            ("us-east-1", Jurisdiction::Outside),
            ("ap-shanghaix", Jurisdiction::Outside),
        ] {
            assert_eq!(jurisdiction(region), want, "{region}");
        }
    }

    #[test]
    fn cross_border_pairs() {
        assert!(is_cross_border("ap-guangzhou", "ap-singapore"));
        assert!(is_cross_border("cn-north-4", "ap-southeast-1"));
        assert!(!is_cross_border("ap-guangzhou", "ap-shanghai"));
        assert!(!is_cross_border("eu-frankfurt", "na-ashburn"));
        assert!(!is_cross_border("region-a", "region-b"));
    }
}
