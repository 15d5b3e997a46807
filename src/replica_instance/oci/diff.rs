//! Pure planning of a ReplicaInstance sync: which primary tags the filters select, and what to
//! copy, leave alone (overwrite: false) or delete (deletes: Propagate) on the replica.

use std::collections::BTreeMap;

use crate::api::v1alpha1::{DeletesPolicy, SyncFilter, SyncSpec};

/// repository -> tag -> manifest digest.
pub type Inventory = BTreeMap<String, BTreeMap<String, String>>;

/// Longest pattern and text [`glob`] compares; longer ones never match (no registry allows a
/// repository or tag name near these sizes).
pub const GLOB_MAX_PATTERN: usize = 1024;
pub const GLOB_MAX_TEXT: usize = 4096;

#[derive(Clone, Copy)]
enum Tok {
    /// `*`: any run of characters but `/`.
    Star,
    /// `**` (and a `/` right after it): any run of characters.
    DoubleStar,
    /// `?`: one character but `/`.
    Any,
    Lit(u8),
}

/// Glob match: `*` matches within one path segment, `**` across segments (`**/` also matches
/// nothing), `?` one character. Time proportional to pattern x text (a table of suffix
/// matches, two rows kept), never exponential: filters come from specs and names from
/// registries, and neither may stall the operator.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    if p.len() > GLOB_MAX_PATTERN || t.len() > GLOB_MAX_TEXT {
        return false;
    }
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                toks.push(Tok::DoubleStar);
                i += if p.get(i + 2) == Some(&b'/') { 3 } else { 2 };
            }
            b'*' => {
                toks.push(Tok::Star);
                i += 1;
            }
            b'?' => {
                toks.push(Tok::Any);
                i += 1;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    let n = t.len();
    // next[j]: tokens[k+1..] match t[j..]; row[j]: tokens[k..] match t[j..].
    let mut next: Vec<bool> = (0..=n).map(|j| j == n).collect();
    let mut row = vec![false; n + 1];
    for tok in toks.iter().rev() {
        for j in (0..=n).rev() {
            row[j] = match *tok {
                Tok::Lit(c) => j < n && t[j] == c && next[j + 1],
                Tok::Any => j < n && t[j] != b'/' && next[j + 1],
                Tok::Star => next[j] || (j < n && t[j] != b'/' && row[j + 1]),
                Tok::DoubleStar => next[j] || (j < n && row[j + 1]),
            };
        }
        std::mem::swap(&mut next, &mut row);
    }
    next[0]
}

fn any_or_all(globs: &[String], text: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| glob(g, text))
}

fn excluded(f: &SyncFilter, repo: &str, tag: Option<&str>) -> bool {
    f.exclude.iter().any(|e| match (e.split_once(':'), tag) {
        (Some((r, t)), Some(tag)) => glob(r, repo) && glob(t, tag),
        (Some(_), None) => false,
        (None, _) => glob(e, repo),
    })
}

/// Whether the filters select a repository (for listing and for delete propagation).
pub fn selects_repo(filters: &[SyncFilter], repo: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| any_or_all(&f.repositories, repo) && !excluded(f, repo, None))
}

/// Whether the filters select a tag of a repository.
pub fn selects(filters: &[SyncFilter], repo: &str, tag: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| any_or_all(&f.repositories, repo) && any_or_all(&f.tags, tag) && !excluded(f, repo, Some(tag)))
}

/// An artifact to act on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// What a sync does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Missing on the replica, or different and overwrite is on.
    pub copy: Vec<Item>,
    /// Different on the replica and overwrite is off: left alone, reported. `digest` is the primary's.
    pub conflicts: Vec<(Item, String)>,
    /// On the replica, gone from the primary, deletes Propagate. `digest` is the replica's.
    pub delete: Vec<Item>,
    /// Deletions skipped because another kept tag shares the digest (a registry deletes by digest).
    pub delete_blocked: Vec<Item>,
    /// Tags selected on the primary.
    pub selected: usize,
    /// Repositories selected on the primary.
    pub repositories: usize,
}

/// Compare the primary with the replica.
pub fn diff(primary: &Inventory, replica: &Inventory, sync: &SyncSpec) -> SyncPlan {
    let mut p = SyncPlan::default();
    let empty = BTreeMap::new();
    for (repo, tags) in primary {
        if !selects_repo(&sync.filters, repo) {
            continue;
        }
        let mut any = false;
        let have = replica.get(repo).unwrap_or(&empty);
        for (tag, digest) in tags {
            if !selects(&sync.filters, repo, tag) {
                continue;
            }
            any = true;
            p.selected += 1;
            let item = Item {
                repository: repo.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
            };
            match have.get(tag) {
                Some(d) if d == digest => {}
                Some(d) if !sync.overwrite => p.conflicts.push((item, d.clone())),
                _ => p.copy.push(item),
            }
        }
        if any {
            p.repositories += 1;
        }
    }
    if sync.deletes == DeletesPolicy::Propagate {
        for (repo, tags) in replica {
            if !selects_repo(&sync.filters, repo) {
                continue;
            }
            let on_primary = primary.get(repo).unwrap_or(&empty);
            for (tag, digest) in tags {
                if on_primary.contains_key(tag) || !selects(&sync.filters, repo, tag) {
                    continue;
                }
                let item = Item {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    digest: digest.clone(),
                };
                // Deleting by digest removes every tag on it: only when no kept tag shares it.
                let shared = tags
                    .iter()
                    .any(|(t, d)| t != tag && d == digest && on_primary.contains_key(t));
                if shared {
                    p.delete_blocked.push(item)
                } else {
                    p.delete.push(item)
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recursive matcher this replaced (exponential on patterns with many stars): the
    /// same answers on every small pattern and text over a telling alphabet.
    fn reference(pattern: &str, text: &str) -> bool {
        fn rec(p: &[u8], t: &[u8]) -> bool {
            match p {
                [] => t.is_empty(),
                [b'*', b'*', rest @ ..] => {
                    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                    (0..=t.len()).any(|i| rec(rest, &t[i..]))
                }
                [b'*', rest @ ..] => (0..=t.len())
                    .take_while(|&i| i == 0 || t[i - 1] != b'/')
                    .any(|i| rec(rest, &t[i..])),
                [b'?', rest @ ..] => !t.is_empty() && t[0] != b'/' && rec(rest, &t[1..]),
                [c, rest @ ..] => !t.is_empty() && t[0] == *c && rec(rest, &t[1..]),
            }
        }
        rec(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn glob_agrees_with_the_recursive_matcher_and_stays_fast() {
        let (pa, ta) = (b"a*?/", b"ab/");
        // Every word of up to `len` characters over `alpha`.
        let words = |alpha: &[u8], len: usize| -> Vec<String> {
            let mut all = vec![String::new()];
            let mut frontier = vec![String::new()];
            for _ in 0..len {
                frontier = frontier
                    .iter()
                    .flat_map(|w| alpha.iter().map(move |c| format!("{w}{}", *c as char)))
                    .collect();
                all.extend(frontier.iter().cloned());
            }
            all
        };
        let (patterns, texts) = (words(pa, 5), words(ta, 5));
        for p in &patterns {
            for t in &texts {
                assert_eq!(glob(p, t), reference(p, t), "{p:?} ~ {t:?}");
            }
        }
        // What the fuzzer found: many stars before a literal that never comes. The recursive
        // matcher takes exponential time on this; the table answers at once.
        let p = format!("{}.", "*".repeat(16));
        let t = "x".repeat(40);
        assert!(!glob(&p, &t));
        assert!(
            !glob(&"a".repeat(GLOB_MAX_PATTERN + 1), "a"),
            "oversized patterns never match"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("team-a/**", "team-a/web"));
        assert!(glob("team-a/**", "team-a/apps/web"));
        assert!(!glob("team-a/*", "team-a/apps/web"));
        assert!(glob("team-a/*", "team-a/web"));
        assert!(glob("v*", "v1.2"));
        assert!(!glob("v*", "latest"));
        assert!(glob("**", "a/b/c"));
        assert!(glob("a/**/c", "a/b/x/c"));
        assert!(glob("v1.?", "v1.2"));
        assert!(!glob("team-b/**", "team-a/web"));
    }

    fn inv(items: &[(&str, &str, &str)]) -> Inventory {
        let mut i = Inventory::new();
        for (r, t, d) in items {
            i.entry(r.to_string()).or_default().insert(t.to_string(), d.to_string());
        }
        i
    }

    fn spec(filters: Vec<SyncFilter>, overwrite: bool, deletes: DeletesPolicy) -> SyncSpec {
        SyncSpec {
            filters,
            overwrite,
            deletes,
            ..Default::default()
        }
    }

    #[test]
    fn filters_select_repositories_and_tags_with_excludes() {
        let f = vec![SyncFilter {
            repositories: vec!["team-a/**".into()],
            tags: vec!["v*".into()],
            exclude: vec!["team-a/scratch/**".into(), "team-a/web:v0*".into()],
        }];
        assert!(selects(&f, "team-a/web", "v1"));
        assert!(!selects(&f, "team-a/web", "latest"));
        assert!(!selects(&f, "team-a/web", "v0.9"));
        assert!(!selects(&f, "team-a/scratch/x", "v1"));
        assert!(!selects(&f, "team-b/web", "v1"));
        assert!(selects(&[], "anything", "at-all"));
    }

    #[test]
    fn diff_copies_missing_and_changed_and_reports_conflicts() {
        let primary = inv(&[("a/web", "v1", "d1"), ("a/web", "v2", "d2"), ("a/api", "v1", "d3")]);
        let replica = inv(&[("a/web", "v1", "d1"), ("a/web", "v2", "old")]);
        let p = diff(&primary, &replica, &spec(vec![], true, DeletesPolicy::Ignore));
        let copied: Vec<_> = p.copy.iter().map(|i| format!("{}:{}", i.repository, i.tag)).collect();
        assert_eq!(copied, vec!["a/api:v1", "a/web:v2"]);
        assert_eq!((p.selected, p.repositories), (3, 2));
        let p = diff(&primary, &replica, &spec(vec![], false, DeletesPolicy::Ignore));
        assert_eq!(p.copy.len(), 1);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].1, "old");
    }

    #[test]
    fn deletes_propagate_only_within_filters_and_never_with_ignore() {
        let primary = inv(&[("a/web", "v1", "d1"), ("a/web", "latest", "d1")]);
        let replica = inv(&[
            ("a/web", "v1", "d1"),
            ("a/web", "latest", "d1"),
            ("a/web", "v0", "d0"),
            ("a/web", "old-alias", "d1"),
            ("b/other", "v1", "x"),
        ]);
        let f = vec![SyncFilter {
            repositories: vec!["a/**".into()],
            ..Default::default()
        }];
        let p = diff(&primary, &replica, &spec(f.clone(), true, DeletesPolicy::Propagate));
        assert_eq!(p.delete.iter().map(|i| i.tag.as_str()).collect::<Vec<_>>(), vec!["v0"]);
        assert_eq!(
            p.delete_blocked.iter().map(|i| i.tag.as_str()).collect::<Vec<_>>(),
            vec!["old-alias"]
        );
        let p = diff(&primary, &replica, &spec(f, true, DeletesPolicy::Ignore));
        assert!(p.delete.is_empty());
    }
}
