//! The server's side of the dashboard: the Trunk build's files at `/`, `index.html` for the
//! app's own routes, and a page that says how to build it when there is no build.

use crate::helpers::spawn_app_with;

fn root(app: &crate::helpers::TestApp) -> String {
    app.base.trim_end_matches("/api").to_string()
}

#[tokio::test]
async fn without_a_build_the_root_says_how_to_make_one() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_path_buf();
    let app = spawn_app_with(move |c| c.frontend_dir = dir).await;
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
    let app = spawn_app_with(move |c| c.frontend_dir = dir).await;
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
