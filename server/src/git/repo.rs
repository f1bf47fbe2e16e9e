//! Plain git2 operations on one job's bare repository: commit a set of files on top of HEAD,
//! keep the packs few, list the history a page at a time, read a file at HEAD.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository, Signature, Time, Tree};

pub use agora_shared::CommitInfo;

/// Opens the bare repository in `dir`, creating it when missing. A new one gets git's
/// directories only: no copy of the system's template (sample hooks, `description`, ...), which
/// made each new job's repository some 30 files instead of 12.
pub fn open_or_init(dir: &Path) -> Result<Repository, git2::Error> {
    match Repository::open_bare(dir) {
        Ok(r) => Ok(r),
        Err(_) => Repository::init_opts(
            dir,
            git2::RepositoryInitOptions::new()
                .bare(true)
                .template_path(Path::new("")),
        ),
    }
}

enum Node {
    File(Oid),
    Dir(BTreeMap<String, Node>),
}

fn insert(root: &mut BTreeMap<String, Node>, path: &str, oid: Oid) {
    let mut parts: Vec<&str> = path.split('/').collect();
    let Some(file) = parts.pop() else { return };
    let mut dir = root;
    for p in parts {
        let entry = dir
            .entry(p.to_string())
            .or_insert_with(|| Node::Dir(BTreeMap::new()));
        if let Node::File(_) = entry {
            *entry = Node::Dir(BTreeMap::new());
        }
        let Node::Dir(next) = entry else { return };
        dir = next;
    }
    dir.insert(file.to_string(), Node::File(oid));
}

/// Writes `nodes` over `base`, each tree once.
fn write_tree(
    repo: &Repository,
    base: Option<&Tree>,
    nodes: &BTreeMap<String, Node>,
) -> Result<Oid, git2::Error> {
    let mut tb = repo.treebuilder(base)?;
    for (name, node) in nodes {
        match node {
            Node::File(oid) => {
                tb.insert(name, *oid, 0o100644)?;
            }
            Node::Dir(children) => {
                let sub = match base.and_then(|t| t.get_name(name)) {
                    Some(e) if e.kind() == Some(git2::ObjectType::Tree) => {
                        Some(repo.find_tree(e.id())?)
                    }
                    _ => None,
                };
                let oid = write_tree(repo, sub.as_ref(), children)?;
                tb.insert(name, oid, 0o040000)?;
            }
        }
    }
    tb.write()
}

/// An agent's name as git takes it for an author: Agora allows any name, git refuses `<`, `>`
/// and line breaks (a refused author used to stop the job's history for good), and trims what
/// it calls crud at the ends. What git refuses becomes `_`; an empty name becomes `agent`.
pub fn git_author(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '<' || c == '>' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | ',' | ':' | ';' | '"' | '\'' | '\\')
    });
    if trimmed.is_empty() {
        "agent".to_string()
    } else {
        trimmed.to_string()
    }
}

/// One commit to write.
pub struct NewCommit {
    pub files: Vec<(String, Vec<u8>)>,
    pub message: String,
    pub author: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Writes several commits on top of HEAD of the repository in `dir` (created if missing) as one
/// packfile instead of thousands of loose object files (a task is three objects), then moves
/// the branch: objects first, ref last, so a crash in between leaves the old history intact.
/// It opens a handle of its own: an object database keeps every mempack backend added to it,
/// and a second one on a reused handle would take the writes while the first is dumped.
pub fn commit_packed(dir: &Path, commits: &[NewCommit]) -> Result<Option<Oid>, git2::Error> {
    use std::io::Write;
    if commits.is_empty() {
        return Ok(None);
    }
    let own = open_or_init(dir)?;
    let repo = &own;
    let odb = repo.odb()?;
    let mempack = odb.add_new_mempack_backend(1000)?;
    let mut parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let mut last = None;
    for c in commits {
        let mut nodes = BTreeMap::new();
        for (path, content) in &c.files {
            insert(&mut nodes, path, repo.blob(content)?);
        }
        let base = parent.as_ref().map(|p| p.tree()).transpose()?;
        let tree = repo.find_tree(write_tree(repo, base.as_ref(), &nodes)?)?;
        let author = git_author(&c.author);
        let sig = Signature::new(
            &author,
            "agent@agora.local",
            &Time::new(c.at.timestamp(), 0),
        )?;
        // The agent's own name stays in the message when git could not take it as it is.
        let message = if author == c.author {
            std::borrow::Cow::Borrowed(c.message.as_str())
        } else {
            std::borrow::Cow::Owned(format!("{}\n\nAgent: {}", c.message, c.author))
        };
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let oid = repo.commit(None, &sig, &sig, &message, &tree, &parents)?;
        parent = Some(repo.find_commit(oid)?);
        last = Some(oid);
    }
    let mut pack = git2::Buf::new();
    mempack.dump(repo, &mut pack)?;
    let mut writer = odb.packwriter()?;
    writer
        .write_all(&pack)
        .map_err(|e| git2::Error::from_str(&format!("writing the pack: {e}")))?;
    writer.commit()?;
    mempack.reset()?;
    if let Some(oid) = last {
        let head = repo.find_reference("HEAD")?;
        let branch = head
            .symbolic_target()
            .unwrap_or("refs/heads/main")
            .to_string();
        repo.reference(&branch, oid, true, "agora")?;
    }
    repack_if_due(repo)?;
    Ok(last)
}

/// Packs a repository may hold before they are merged into one: each flush writes a pack, and
/// libgit2 never repacks on its own (400 tasks trickled in used to leave 43 packs).
pub const MAX_PACKS: usize = 6;
/// Past [`MAX_PACKS`], the packs are merged once the newer ones together are as large as the
/// largest (so each object is rewritten a logarithmic number of times, not once every few
/// flushes: merging a 40,000-task job's whole history every seventh flush cost a third of the
/// server's CPU under load), and at the latest past this many.
pub const MOST_PACKS: usize = 48;

/// Whether packs of these sizes are due to be merged.
fn due_for_repack(sizes: &[u64]) -> bool {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let rest: u64 = sizes.iter().sum::<u64>() - largest;
    sizes.len() > MOST_PACKS || (sizes.len() > MAX_PACKS && rest >= largest)
}

/// The pack files (`objects/pack/*.pack`) of a repository.
fn pack_files(repo: &Repository) -> Vec<std::path::PathBuf> {
    let dir = repo.path().join("objects").join("pack");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect()
}

/// When the repository's packs are due ([`due_for_repack`]), writes everything reachable from
/// HEAD as one pack and removes the others (new pack first, old ones after, so every object
/// stays readable; a reader that races the removal retries). Whether it repacked.
pub fn repack_if_due(repo: &Repository) -> Result<bool, git2::Error> {
    use std::io::Write;
    let before = pack_files(repo);
    let sizes: Vec<u64> = before
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    if !due_for_repack(&sizes) || repo.head().is_err() {
        return Ok(false);
    }
    let mut pb = repo.packbuilder()?;
    let mut walk = repo.revwalk()?;
    walk.push_head()?;
    pb.insert_walk(&mut walk)?;
    let mut pack = git2::Buf::new();
    pb.write_buf(&mut pack)?;
    let odb = repo.odb()?;
    let mut writer = odb.packwriter()?;
    writer
        .write_all(&pack)
        .map_err(|e| git2::Error::from_str(&format!("writing the pack: {e}")))?;
    writer.commit()?;
    let after = pack_files(repo);
    if after.iter().all(|p| before.contains(p)) {
        // The same pack exists already (nothing to merge).
        return Ok(false);
    }
    for old in before {
        let _ = std::fs::remove_file(old.with_extension("idx"));
        let _ = std::fs::remove_file(&old);
    }
    odb.refresh()?;
    Ok(true)
}

/// A page of the history, newest first: `limit` commits from `offset`, and how many there are.
pub fn commits(
    repo: &Repository,
    offset: u64,
    limit: u32,
) -> Result<(Vec<CommitInfo>, u64), git2::Error> {
    let mut out = Vec::new();
    if repo.head().is_err() {
        return Ok((out, 0));
    }
    let mut walk = repo.revwalk()?;
    walk.push_head()?;
    let mut total = 0u64;
    for oid in walk {
        let oid = oid?;
        total += 1;
        if total <= offset || out.len() >= limit as usize {
            continue;
        }
        let c = repo.find_commit(oid)?;
        let tree = c.tree()?;
        let parent_tree = c.parents().next().map(|p| p.tree()).transpose()?;
        let diff = repo.diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)?;
        let files = diff
            .deltas()
            .filter_map(|d| {
                d.new_file()
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .collect();
        out.push(CommitInfo {
            id: c.id().to_string(),
            message: c.message().unwrap_or("").trim_end().to_string(),
            author: c.author().name().unwrap_or("").to_string(),
            time: chrono::DateTime::from_timestamp(c.time().seconds(), 0).unwrap_or_default(),
            files,
        });
    }
    Ok((out, total))
}

/// A file at HEAD, if it exists.
pub fn read(repo: &Repository, path: &str) -> Result<Option<Vec<u8>>, git2::Error> {
    let Ok(head) = repo.head() else {
        return Ok(None);
    };
    let tree = head.peel_to_tree()?;
    match tree.get_path(Path::new(path)) {
        Ok(entry) => Ok(entry
            .to_object(repo)?
            .as_blob()
            .map(|b| b.content().to_vec())),
        Err(_) => Ok(None),
    }
}

/// Every file at HEAD, by path (empty before the first commit).
pub fn files(repo: &Repository) -> Result<Vec<String>, git2::Error> {
    let Ok(head) = repo.head() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    head.peel_to_tree()?
        .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                if let Some(name) = entry.name() {
                    out.push(format!("{dir}{name}"));
                }
            }
            git2::TreeWalkResult::Ok
        })?;
    Ok(out)
}

/// Names of the entries of a directory at HEAD (empty when missing).
pub fn list_dir(repo: &Repository, path: &str) -> Result<Vec<String>, git2::Error> {
    let Ok(head) = repo.head() else {
        return Ok(Vec::new());
    };
    let tree = head.peel_to_tree()?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(Vec::new());
    };
    let Some(dir) = entry.to_object(repo)?.as_tree().cloned() else {
        return Ok(Vec::new());
    };
    Ok(dir
        .iter()
        .filter_map(|e| e.name().map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_agent_name_is_a_valid_author() {
        for name in ["<x>", "a\nb", "  ", "...", "\"q\"", "ok name", "<>", "名前"] {
            let author = git_author(name);
            assert!(
                git2::Signature::now(&author, "agent@agora.local").is_ok(),
                "{name:?} -> {author:?}"
            );
        }
        assert_eq!(git_author("ok name"), "ok name");
        assert_eq!(git_author("<x>"), "_x_");
        assert_eq!(git_author("  "), "agent");
    }

    #[test]
    fn a_new_repository_is_git_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_or_init(&dir.path().join("r")).unwrap();
        assert!(repo.is_bare());
        let mut files = Vec::new();
        let mut todo = vec![dir.path().join("r")];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                match p.is_dir() {
                    true => todo.push(p),
                    false => files.push(p),
                }
            }
        }
        files.sort();
        let names: Vec<_> = files.iter().filter_map(|p| p.file_name()).collect();
        assert_eq!(names, ["HEAD", "config"], "{files:?}");
        assert!(Repository::open_bare(dir.path().join("r")).is_ok());
    }

    #[test]
    fn commits_nested_files_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_or_init(dir.path()).unwrap();
        let at = chrono::Utc::now();
        let one = |files: Vec<(&str, &[u8])>, message: &str, author: &str| NewCommit {
            files: files
                .into_iter()
                .map(|(p, c)| (p.to_string(), c.to_vec()))
                .collect(),
            message: message.into(),
            author: author.into(),
            at,
        };
        commit_packed(
            dir.path(),
            &[one(vec![("job.json", b"{}")], "Submit", "alice")],
        )
        .unwrap();
        // Two commits in one pack, the second on top of the first.
        let two = one(
            vec![
                ("tasks/1-ab/spec.json", b"1"),
                ("tasks/2-cd/spec.json", b"2"),
            ],
            "Two tasks",
            "bob",
        );
        let three = one(vec![("tasks/3-ef/spec.json", b"3")], "One more", "bob");
        commit_packed(dir.path(), &[two, three]).unwrap();
        assert_eq!(
            read(&repo, "tasks/2-cd/spec.json").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(read(&repo, "job.json").unwrap(), Some(b"{}".to_vec()));
        assert_eq!(
            list_dir(&repo, "tasks").unwrap(),
            vec!["1-ab", "2-cd", "3-ef"]
        );
        let (log, total) = commits(&repo, 0, 10).unwrap();
        assert_eq!((log.len(), total), (3, 3));
        let (page, _) = commits(&repo, 1, 1).unwrap();
        assert_eq!(page[0].id, log[1].id, "the second page of one");
        assert_eq!(log[0].files, vec!["tasks/3-ef/spec.json"]);
        assert_eq!(log[1].author, "bob");
        assert_eq!(log[2].message, "Submit");
    }

    #[test]
    fn packs_are_merged_when_the_newer_ones_add_up_to_the_largest() {
        assert!(!due_for_repack(&[100; 6]), "six packs stay");
        assert!(due_for_repack(&[100; 7]), "seven equal packs merge");
        assert!(!due_for_repack(&[1000, 10, 10, 10, 10, 10, 10]));
        assert!(due_for_repack(&[60, 10, 10, 10, 10, 10, 10]));
        let mut many = vec![1_000_000];
        many.extend([1; 48]);
        assert!(
            due_for_repack(&many),
            "at most 48 packs, whatever their sizes"
        );
    }

    #[test]
    fn packs_stay_few_and_every_commit_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_or_init(dir.path()).unwrap();
        for i in 0..40 {
            let c = NewCommit {
                files: vec![(
                    format!("tasks/0-99/{i}-x/spec.json"),
                    format!("{i}").into_bytes(),
                )],
                message: format!("task {i}"),
                author: "a".into(),
                at: chrono::Utc::now(),
            };
            commit_packed(dir.path(), &[c]).unwrap();
            assert!(pack_files(&repo).len() <= MOST_PACKS, "after {i}");
        }
        assert!(
            pack_files(&repo).len() < 40,
            "trickled commits were merged along the way"
        );
        let fresh = Repository::open_bare(dir.path()).unwrap();
        assert_eq!(commits(&fresh, 0, 100).unwrap().1, 40);
        for i in 0..40 {
            assert_eq!(
                read(&fresh, &format!("tasks/0-99/{i}-x/spec.json")).unwrap(),
                Some(format!("{i}").into_bytes())
            );
        }
    }
}
