//! The server's side of the dashboard: the build embedded in the binary at `/` (gzipped for
//! browsers that take it), `index.html` for the app's own routes, another build from
//! `FRONTEND_DIR` when set, and a page that says how to build one when that directory is empty.

use crate::helpers::spawn_app_with;

fn root(app: &crate::helpers::TestApp) -> String {
    app.base.trim_end_matches("/api").to_string()
}

async fn fetch(
    app: &crate::helpers::TestApp,
    path: &str,
    gzip: bool,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = app.http.get(format!("{}{path}", root(app)));
    if gzip {
        req = req.header("accept-encoding", "gzip, deflate");
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body").to_vec())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn the_binary_serves_its_own_dashboard_with_no_build_step() {
    let app = spawn_app_with(|c| c.frontend_dir = None).await;
    let (status, h, page) = fetch(&app, "/", false).await;
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("text/html"));
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let page = String::from_utf8(page).expect("utf-8 page");
    // The page names its script and its wasm; both are served, the wasm as wasm.
    let named = |ext: &str| {
        page.split(['"', '\''])
            .find(|s| s.starts_with('/') && s.ends_with(ext))
            .unwrap_or_else(|| panic!("index.html names no {ext}: {page}"))
            .to_string()
    };
    let (wasm, js) = (named(".wasm"), named(".js"));
    let (status, h, body) = fetch(&app, &wasm, false).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "application/wasm");
    assert!(header(&h, "cache-control").contains("immutable"));
    assert_eq!(&body[..4], b"\0asm", "the wasm magic");
    assert!(h.get("content-encoding").is_none());
    // A browser that takes gzip gets the smaller twin.
    let (status, h, gz) = fetch(&app, &wasm, true).await;
    assert_eq!((status, header(&h, "content-encoding")), (200, "gzip"));
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(
        gz.len() < body.len() / 2,
        "{} of {} bytes",
        gz.len(),
        body.len()
    );
    let (status, h, _) = fetch(&app, &js, false).await;
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("text/javascript"));
    // The app's own routes load the page; the API's unknown routes stay JSON 404s.
    let (status, _, again) = fetch(&app, "/jobs/6f1c2a9e-0000-4000-8000-000000000000", true).await;
    assert_eq!((status, again), (200, page.into_bytes()));
    app.get("/nothing/here").await.err(404, "NOT_FOUND");
}

#[tokio::test]
async fn without_a_build_the_root_says_how_to_make_one() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_path_buf();
    let app = spawn_app_with(move |c| c.frontend_dir = Some(dir)).await;
    let res = app
        .http
        .get(format!("{}/", root(&app)))
        .send()
        .await
        .expect("GET /");
    assert_eq!(res.status(), 200);
    let body = res.text().await.expect("body");
    assert!(body.contains("scripts/build-dashboard.sh"), "{body}");
    // The API is not the dashboard's: unknown API routes stay JSON 404s.
    app.get("/nothing/here").await.err(404, "NOT_FOUND");
}

#[tokio::test]
async fn the_build_is_served_with_index_html_for_the_apps_routes() {
    let build = tempfile::tempdir().expect("temp dir");
    std::fs::write(build.path().join("index.html"), "<html>dashboard</html>").expect("index");
    std::fs::write(build.path().join("app-123.js"), "console.log(1)").expect("js");
    let dir = build.path().to_path_buf();
    let app = spawn_app_with(move |c| c.frontend_dir = Some(dir)).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", root(&app));
        let http = app.http.clone();
        async move {
            let res = http.get(url).send().await.expect("GET");
            let status = res.status().as_u16();
            let ctype = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, ctype, res.text().await.expect("body"))
        }
    };
    let (status, ctype, body) = get("/").await;
    assert_eq!((status, body.as_str()), (200, "<html>dashboard</html>"));
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let (status, ctype, body) = get("/app-123.js").await;
    assert_eq!((status, body.as_str()), (200, "console.log(1)"));
    assert!(ctype.contains("javascript"), "{ctype}");
    let (status, _, body) = get("/jobs/6f1c2a9e-0000-4000-8000-000000000000").await;
    assert_eq!((status, body.as_str()), (200, "<html>dashboard</html>"));
}
