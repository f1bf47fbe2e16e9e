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

/// Where a flush writes: a repository over an object database that holds only the new
/// objects, in memory, until they are written to the job's repository as one pack. libgit2 looks
/// for an object before it writes it, and in a database with pack files a miss reads the pack
/// directory again (a third of the history's CPU went to that, twice per object: on write, and
/// when the pack was built); here a miss costs nothing. The trees and commits already in the
/// job's repository are read from it (`base`).
struct Staging<'a> {
    base: &'a Repository,
    repo: Repository,
    /// The objects written, for the pack.
    written: std::cell::RefCell<Vec<Oid>>,
}

impl Staging<'_> {
    /// Writes an object to memory.
    fn write(&self, kind: git2::ObjectType, data: &[u8]) -> Result<Oid, git2::Error> {
        let oid = self.repo.odb()?.write(kind, data)?;
        self.written.borrow_mut().push(oid);
        Ok(oid)
    }

    /// The objects written, as a pack. Only they go in it (a mempack's own dump walks every
    /// commit's whole tree, and put the job's whole history in each flush's pack).
    fn pack(&self) -> Result<git2::Buf, git2::Error> {
        let mut pb = self.repo.packbuilder()?;
        for oid in self.written.borrow().iter() {
            pb.insert_object(*oid, None)?;
        }
        let mut pack = git2::Buf::new();
        pb.write_buf(&mut pack)?;
        Ok(pack)
    }

    /// A tree written in this flush, or else one of the job's repository.
    fn tree(&self, oid: Oid) -> Result<Tree<'_>, git2::Error> {
        match self.repo.find_tree(oid) {
            Ok(t) => Ok(t),
            Err(_) => self.base.find_tree(oid),
        }
    }

    /// Writes `nodes` over the tree `base` (its entries kept, those named in `nodes` replaced),
    /// each tree once.
    fn write_tree(
        &self,
        base: Option<Oid>,
        nodes: &BTreeMap<String, Node>,
    ) -> Result<Oid, git2::Error> {
        let base = base.map(|b| self.tree(b)).transpose()?;
        let mut tb = self.repo.treebuilder(None)?;
        if let Some(base) = &base {
            for e in base.iter() {
                if let Some(name) = e.name() {
                    tb.insert(name, e.id(), e.filemode_raw())?;
                }
            }
        }
        for (name, node) in nodes {
            match node {
                Node::File(oid) => {
                    tb.insert(name, *oid, 0o100644)?;
                }
                Node::Dir(children) => {
                    let sub = base
                        .as_ref()
                        .and_then(|t| t.get_name(name))
                        .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
                        .map(|e| e.id());
                    let oid = self.write_tree(sub, children)?;
                    tb.insert(name, oid, 0o040000)?;
                }
            }
        }
        let oid = tb.write()?;
        self.written.borrow_mut().push(oid);
        Ok(oid)
    }

    /// Writes a commit object: `tree`, on top of `parent`, by `author` at `at` (UTC).
    fn commit(
        &self,
        tree: Oid,
        parent: Option<Oid>,
        author: &str,
        at: i64,
        message: &str,
    ) -> Result<Oid, git2::Error> {
        // Refuses what git would (`<`, `>`, line breaks), as creating the commit through
        // libgit2 did.
        Signature::new(author, EMAIL, &Time::new(at, 0))?;
        let mut text = format!("tree {tree}\n");
        if let Some(p) = parent {
            text.push_str(&format!("parent {p}\n"));
        }
        for role in ["author", "committer"] {
            text.push_str(&format!("{role} {author} <{EMAIL}> {at} +0000\n"));
        }
        text.push('\n');
        text.push_str(message);
        self.write(git2::ObjectType::Commit, text.as_bytes())
    }
}

/// The e-mail of every commit's author.
const EMAIL: &str = "agent@agora.local";

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
/// The objects are made in memory first ([`Staging`]).
pub fn commit_packed(dir: &Path, commits: &[NewCommit]) -> Result<Option<Oid>, git2::Error> {
    use std::io::Write;
    if commits.is_empty() {
        return Ok(None);
    }
    // The staging database holds only this flush's objects, so libgit2 must not check that
    // the objects a tree names are in it (they are in the job's repository). Every tree here is
    // written after the objects it names.
    static LAX: std::sync::Once = std::sync::Once::new();
    LAX.call_once(|| git2::opts::strict_object_creation(false));
    let repo = open_or_init(dir)?;
    let staging = Staging {
        base: &repo,
        repo: Repository::from_odb(git2::Odb::new()?)?,
        written: Default::default(),
    };
    let memory = staging.repo.odb()?;
    let _mempack = memory.add_new_mempack_backend(1000)?;
    let mut parent = repo.head().ok().and_then(|h| h.target());
    let mut tree = match parent {
        Some(p) => Some(repo.find_commit(p)?.tree_id()),
        None => None,
    };
    for c in commits {
        let mut nodes = BTreeMap::new();
        for (path, content) in &c.files {
            let blob = staging.write(git2::ObjectType::Blob, content)?;
            insert(&mut nodes, path, blob);
        }
        let written = staging.write_tree(tree, &nodes)?;
        let author = git_author(&c.author);
        // The agent's own name stays in the message when git could not take it as it is.
        let message = if author == c.author {
            std::borrow::Cow::Borrowed(c.message.as_str())
        } else {
            std::borrow::Cow::Owned(format!("{}\n\nAgent: {}", c.message, c.author))
        };
        let oid = staging.commit(written, parent, &author, c.at.timestamp(), &message)?;
        parent = Some(oid);
        tree = Some(written);
    }
    let pack = staging.pack()?;
    let odb = repo.odb()?;
    let mut writer = odb.packwriter()?;
    writer
        .write_all(&pack)
        .map_err(|e| git2::Error::from_str(&format!("writing the pack: {e}")))?;
    writer.commit()?;
    if let Some(oid) = parent {
        let head = repo.find_reference("HEAD")?;
        let branch = head
            .symbolic_target()
            .unwrap_or("refs/heads/main")
            .to_string();
        repo.reference(&branch, oid, true, "agora")?;
    }
    repack_if_due(&repo)?;
    Ok(parent)
}

/// Packs a repository may hold before some are merged: each flush writes a pack of its new
/// objects, and libgit2 never repacks on its own (400 tasks trickled in used to leave 43 packs).
pub const MAX_PACKS: usize = 6;

/// Which packs (indexes into `sizes`) to merge into one: none while there are at most
/// [`MAX_PACKS`]; else the smallest, enough of them to get back to [`MAX_PACKS`], and then every
/// next one that is not more than twice as large as those taken together. The packs left form
/// a progression in which each is more than twice the size of all smaller ones together, so
/// an object is rewritten a logarithmic number of times (merging a 40,000-task job's whole
/// history every seventh flush once cost a third of the server's CPU under load), and a small
/// flush merges small packs only.
fn packs_to_merge(sizes: &[u64]) -> Vec<usize> {
    if sizes.len() <= MAX_PACKS {
        return Vec::new();
    }
    let needed = (sizes.len() - MAX_PACKS + 1).max(2);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut merged = 0u64;
    let mut take = 0;
    for (n, &i) in order.iter().enumerate() {
        if n >= needed && sizes[i] > merged.saturating_mul(2) {
            break;
        }
        merged += sizes[i];
        take = n + 1;
    }
    order.truncate(take);
    order
}

/// The ids of the objects of a pack, from its index (`.idx`, version 2: a header, 256 counts,
/// then the sorted ids).
fn pack_ids(idx: &Path) -> Result<Vec<Oid>, git2::Error> {
    let bad = || git2::Error::from_str(&format!("{} is not a version 2 pack index", idx.display()));
    let bytes = std::fs::read(idx)
        .map_err(|e| git2::Error::from_str(&format!("reading {}: {e}", idx.display())))?;
    if bytes.get(..8) != Some(&[0xff, b't', b'O', b'c', 0, 0, 0, 2][..]) {
        return Err(bad());
    }
    let count = bytes
        .get(8 + 255 * 4..8 + 256 * 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(bad)? as usize;
    let start = 8 + 256 * 4;
    let ids = bytes.get(start..start + 20 * count).ok_or_else(bad)?;
    ids.chunks(20).map(Oid::from_bytes).collect()
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

/// When the repository holds more than [`MAX_PACKS`] packs, merges some ([`packs_to_merge`])
/// into one: the new pack first, the old ones removed after, so every object stays readable (a
/// reader that races the removal retries). Whether it merged.
pub fn repack_if_due(repo: &Repository) -> Result<bool, git2::Error> {
    use std::io::Write;
    let before = pack_files(repo);
    let sizes: Vec<u64> = before
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    let merge = packs_to_merge(&sizes);
    if merge.is_empty() {
        return Ok(false);
    }
    let mut pb = repo.packbuilder()?;
    for &i in &merge {
        for oid in pack_ids(&before[i].with_extension("idx"))? {
            pb.insert_object(oid, None)?;
        }
    }
    let mut pack = git2::Buf::new();
    pb.write_buf(&mut pack)?;
    let odb = repo.odb()?;
    let mut writer = odb.packwriter()?;
    writer
        .write_all(&pack)
        .map_err(|e| git2::Error::from_str(&format!("writing the pack: {e}")))?;
    writer.commit()?;
    if pack_files(repo).iter().all(|p| before.contains(p)) {
        // The same pack exists already (nothing was merged).
        return Ok(false);
    }
    for &i in &merge {
        let _ = std::fs::remove_file(before[i].with_extension("idx"));
        let _ = std::fs::remove_file(&before[i]);
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
    fn the_smallest_packs_are_merged_keeping_each_more_than_twice_the_smaller_ones() {
        let sorted = |mut v: Vec<usize>| {
            v.sort();
            v
        };
        assert!(packs_to_merge(&[100; 6]).is_empty(), "six packs stay");
        assert_eq!(
            sorted(packs_to_merge(&[100; 7])),
            (0..7).collect::<Vec<_>>(),
            "seven equal packs: each is within twice the ones before"
        );
        assert_eq!(
            sorted(packs_to_merge(&[1000, 300, 100, 30, 10, 3, 1])),
            vec![5, 6],
            "a progression: the two smallest only"
        );
        assert_eq!(
            sorted(packs_to_merge(&[1000, 300, 100, 30, 10, 3, 1, 1])),
            vec![3, 4, 5, 6, 7],
            "three needed (5 bytes), then the 10 and the 30, each within twice those before"
        );
        assert_eq!(
            sorted(packs_to_merge(&[5000, 1, 1, 1, 1, 1, 1])),
            vec![1, 2, 3, 4, 5, 6]
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
            assert!(pack_files(&repo).len() <= MAX_PACKS, "after {i}");
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

    #[test]
    fn a_commit_packs_only_its_new_objects() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_or_init(dir.path()).unwrap();
        // 300 files of bytes that do not compress, in one commit.
        let mut seed: u64 = 7;
        let files = (0..300)
            .map(|i| {
                let bytes: Vec<u8> = (0..200)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (seed >> 56) as u8
                    })
                    .collect();
                (format!("tasks/0-299/{i}/result.json"), bytes)
            })
            .collect();
        let at = chrono::Utc::now();
        let commit = |files| NewCommit {
            files,
            message: "m".into(),
            author: "a".into(),
            at,
        };
        commit_packed(dir.path(), &[commit(files)]).unwrap();
        let first = pack_files(&repo);
        commit_packed(
            dir.path(),
            &[commit(vec![("one.json".into(), b"1".to_vec())])],
        )
        .unwrap();
        let sizes: Vec<u64> = pack_files(&repo)
            .iter()
            .filter(|p| !first.contains(p))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect();
        let big = std::fs::metadata(&first[0]).unwrap().len();
        assert_eq!(sizes.len(), 1, "one new pack");
        assert!(
            big > 60_000,
            "the first pack holds the 300 files: {big} bytes"
        );
        assert!(
            sizes[0] < 2_000,
            "the second holds a blob, two trees and a commit: {} bytes",
            sizes[0]
        );
        assert_eq!(read(&repo, "one.json").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            read(&repo, "tasks/0-299/299/result.json")
                .unwrap()
                .map(|b| b.len()),
            Some(200)
        );
    }
}
