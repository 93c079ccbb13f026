//! Browser test: headless Chromium, driven through WebDriver (`chromedriver`), against the real
//! `snikket-server` and `snikket-portal` binaries on loopback. An admin (registered through a
//! command-line admin invitation) logs in and creates an invitation with the real form; a new user,
//! in a second browser session with its own cookies, opens it, registers through the web form, logs
//! in and changes the password. The admin then adds that user to a circle and revokes an
//! invitation.
//!
//! Along the way every main page is saved at phone and desktop widths as
//! `<target dir>/screenshots/<page>-<phone|desktop>.png`, and no page may scroll sideways on a phone.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test says so and passes,
//! unless `SNIKKET_REQUIRE_BROWSER` is set (as `make test` does): then it fails. The server binary
//! must be built first: `cargo build -p snikket-server`.

#[path = "common/stack.rs"]
mod stack;

use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use snikket_testkit::net::{free_port, wait_for_port};
use snikket_testkit::process::Child;
use stack::{invite_token, Stack, DOMAIN};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long any one step (a page load, an element to appear) may take on a slow machine.
const WAIT: Duration = Duration::from_secs(30);
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1366, 900);
const SITE: &str = "The Family";

/// The first of `names` found in `PATH`.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (after saying why) when the test should be skipped.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let driver = find_program(&["chromedriver"]);
    if let (Some(chromium), Some(driver)) = (chromium.clone(), driver.clone()) {
        return Some((chromium, driver));
    }
    let missing = [
        ("chromium", chromium.is_none()),
        ("chromedriver", driver.is_none()),
    ]
    .iter()
    .filter(|(_, gone)| *gone)
    .map(|(name, _)| *name)
    .collect::<Vec<_>>()
    .join(" and ");
    let required =
        std::env::var_os("SNIKKET_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "SNIKKET_REQUIRE_BROWSER is set but not found in PATH: {missing} \
         (apt-get install chromium chromium-driver)"
    );
    // Straight to stderr, past the test harness's capture, so the skip shows in a passing run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED browser test: {missing} not found in PATH \
         (apt-get install chromium chromium-driver; set SNIKKET_REQUIRE_BROWSER=1 to fail instead)"
    );
    None
}

/// `<target dir>/screenshots`: `CARGO_TARGET_DIR` if set, else the workspace's `target`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                snikket_testkit::workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| snikket_testkit::workspace_root().join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A chromedriver process on a free loopback port. Its process group (chromedriver and every
/// browser it started) is killed on drop, so a failing test leaves nothing behind.
struct Driver {
    // Declared before `profiles`: the browsers stop before their profiles are removed.
    _process: Child,
    /// One browser profile (and so one cookie jar) per session.
    profiles: tempfile::TempDir,
    chromium: PathBuf,
    url: String,
}

impl Driver {
    fn start(chromium: PathBuf, chromedriver: &Path) -> Driver {
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        // Listens on loopback only (no --allowed-ips); its banner goes nowhere.
        cmd.arg(format!("--port={port}")).stdout(Stdio::null());
        let process = Child::spawn_group("chromedriver", cmd);
        wait_for_port(([127, 0, 0, 1], port).into(), WAIT);
        Driver {
            _process: process,
            profiles: snikket_testkit::temp_dir(),
            chromium,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new browser session (its own profile `name`, so its own cookies) at desktop size.
    async fn session(&self, name: &str, base: &str, shots: &Path) -> Tab {
        self.session_in(name, base, shots, "en-US").await
    }

    /// As [`Driver::session`], with a browser whose preferred language is `lang`.
    async fn session_in(&self, name: &str, base: &str, shots: &Path, lang: &str) -> Tab {
        let profile = self.profiles.path().join(name);
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--lang={lang}"),
                ],
                "prefs": {"intl.accept_languages": lang},
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("start a Chromium session through {}: {e}", self.url));
        client
            .update_timeouts(TimeoutConfiguration::new(Some(WAIT), Some(WAIT), None))
            .await
            .expect("set WebDriver timeouts");
        Tab {
            c: client,
            base: base.to_string(),
            shots: shots.to_path_buf(),
            overflow: Vec::new(),
        }
    }
}

/// One browser session on the portal, with helpers that wait and fail with the page's text.
struct Tab {
    c: Client,
    base: String,
    shots: PathBuf,
    /// Screenshots whose page was wider than the phone's screen.
    overflow: Vec<String>,
}

impl Tab {
    /// Where the browser is and what the page says, for failure messages.
    async fn describe(&self) -> String {
        let url = self
            .c
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = match self.c.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        };
        format!("page {url} shows:\n{text}")
    }

    async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.c
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Waits for an element; on time-out fails with where the browser is and what it shows.
    async fn wait(&self, what: Locator<'_>) -> Element {
        let shown = format!("{what:?}");
        match self.c.wait().at_most(WAIT).for_element(what).await {
            Ok(e) => e,
            Err(e) => panic!("waiting for {shown}: {e}\n{}", self.describe().await),
        }
    }

    /// Waits for the page whose `<h1>` is exactly `text` (after the page's whitespace folds).
    async fn heading(&self, text: &str) {
        self.wait(Locator::XPath(&format!("//h1[normalize-space()='{text}']")))
            .await;
    }

    /// Waits for the flash message (`p.notice`) saying `text`.
    async fn notice(&self, text: &str) {
        self.message("notice", text).await;
    }

    /// Waits for the error message (`p.error`) saying `text`.
    async fn error(&self, text: &str) {
        self.message("error", text).await;
    }

    /// Waits for a `p.<class>` saying `text`: by its text, so a message still on the page before
    /// a form's answer arrives does not count.
    async fn message(&self, class: &str, text: &str) {
        self.wait(Locator::XPath(&format!(
            "//p[contains(concat(' ', @class, ' '), ' {class} ') and normalize-space()='{text}']"
        )))
        .await;
    }

    async fn text_of(&self, css: &str) -> String {
        self.text(Locator::Css(css)).await
    }

    /// Waits for an element and returns its rendered text.
    async fn text(&self, what: Locator<'_>) -> String {
        let shown = format!("{what:?}");
        let e = self.wait(what).await;
        e.text()
            .await
            .unwrap_or_else(|e| panic!("text of {shown}: {e}"))
    }

    async fn body(&self) -> String {
        self.text_of("main").await
    }

    async fn value(&self, css: &str) -> String {
        let e = self.wait(Locator::Css(css)).await;
        e.prop("value")
            .await
            .unwrap_or_else(|e| panic!("value of {css}: {e}"))
            .unwrap_or_default()
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.wait(Locator::Css(css)).await;
        e.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        e.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn select(&self, css: &str, value: &str) {
        let e = self.wait(Locator::Css(css)).await;
        e.select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    async fn click(&self, what: Locator<'_>) {
        let shown = format!("{what:?}");
        let e = self.wait(what).await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click {shown}: {e}"));
    }

    /// Saves the current page at phone and desktop widths, the whole page high (at least the
    /// screen's height), and records whether it needs sideways scrolling on the phone.
    async fn screenshots(&mut self, name: &str) {
        for (label, (width, height)) in [("phone", PHONE), ("desktop", DESKTOP)] {
            self.resize(width, height).await;
            let size = self
                .c
                .execute(
                    "return [document.documentElement.scrollHeight, \
                     window.outerHeight - window.innerHeight, \
                     document.documentElement.scrollWidth, window.innerWidth];",
                    Vec::new(),
                )
                .await
                .expect("measure the page");
            let n = |i: usize| size.get(i).and_then(|v| v.as_u64()).unwrap_or(0);
            let (page_height, frame, page_width, view_width) = (n(0), n(1), n(2), n(3));
            if label == "phone" && page_width > view_width {
                self.overflow.push(format!(
                    "{name}: {page_width} px wide on a {view_width} px screen"
                ));
            }
            // The window's own frame (headless still has one) comes on top of the viewport.
            let viewport = page_height.max(u64::from(height));
            let window = u32::try_from(viewport + frame).unwrap_or(height);
            self.resize(width, window).await;
            let png = self.c.screenshot().await.expect("take a screenshot");
            let file = self.shots.join(format!("{name}-{label}.png"));
            std::fs::write(&file, png).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        }
        self.resize(DESKTOP.0, DESKTOP.1).await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.c
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
    }

    async fn close(self) -> Vec<String> {
        self.c.close().await.expect("end the browser session");
        self.overflow
    }
}

/// Fills and submits the web registration form, then checks the success page.
async fn register(tab: &Tab, user: &str, password: &str) {
    tab.fill("#localpart", user).await;
    tab.fill("#password", password).await;
    tab.fill("#password_confirm", password).await;
    tab.click(Locator::XPath(
        "//button[normalize-space()='Create account']",
    ))
    .await;
    tab.heading(&format!("Successfully registered on {SITE}"))
        .await;
    assert_eq!(tab.value("#jid").await, format!("{user}@{DOMAIN}"));
}

/// Fills and submits the login form (the browser must be on `/login`).
async fn submit_login(tab: &Tab, user: &str, password: &str) {
    tab.heading("Log in").await;
    tab.fill("#user", user).await;
    tab.fill("#password", password).await;
    tab.click(Locator::XPath("//main//button[normalize-space()='Log in']"))
        .await;
}

/// Creates an invitation with the form on `/admin/invitations`; returns its link.
async fn create_invitation(admin: &Tab, note: &str) -> String {
    admin.open("/admin/invitations").await;
    admin.heading("Invitations").await;
    admin.select("#kind", "account").await;
    admin.select("#ttl", "86400").await;
    admin.select("#circle", "default").await;
    admin.select("#role", "normal").await;
    admin.fill("#note", note).await;
    admin
        .click(Locator::XPath(
            "//button[normalize-space()='New invitation link']",
        ))
        .await;
    admin.heading("Invitation").await;
    let link = admin.value("#link").await;
    assert!(link.contains("/invite/"), "invitation link {link:?}");
    let page = admin.body().await;
    assert!(page.contains(note), "{page}");
    link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_invites_a_user_who_registers_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let stack = Stack::start();
    let driver = Driver::start(chromium, &chromedriver);
    let shots = screenshot_dir();

    // The admin account comes from the command-line admin invitation.
    let mut admin = driver.session("admin", &stack.base, &shots).await;
    admin
        .open(&format!("/invite/{}/register", stack.admin_token))
        .await;
    admin.heading(&format!("Register on {SITE}")).await;
    register(&admin, "root", "admin password 1").await;
    // Registering signed them in: the login page sends them on to the dashboard.
    admin.click(Locator::LinkText("the login page")).await;
    admin.heading("Welcome, root").await;
    admin
        .click(Locator::XPath(
            "//header//button[normalize-space()='Log out']",
        ))
        .await;
    admin.heading("Log in").await;
    // A wrong password is refused with a message, the right one opens the dashboard.
    submit_login(&admin, "root", "not the password").await;
    admin
        .error("The username or password is not correct.")
        .await;
    submit_login(&admin, "root", "admin password 1").await;
    admin.heading("Welcome, root").await;

    // A new invitation, with the real form.
    admin.open("/admin/invitations").await;
    admin.heading("Invitations").await;
    assert!(admin
        .body()
        .await
        .contains("Currently, there are no pending invitations."));
    let link = create_invitation(&admin, "for Carol").await;
    let token = invite_token(&link);
    assert_eq!(token.len(), 24, "token of {link}");
    let page = admin.body().await;
    assert!(page.contains("Circle(s): "), "{page}");
    admin.wait(Locator::Css(".qr svg")).await;
    admin.screenshots("admin-invitation").await;
    admin.open("/admin/invitations").await;
    admin.heading("Invitations").await;
    let rows = admin.text_of("table tbody").await;
    assert!(rows.contains("for Carol"), "{rows}");
    admin.screenshots("admin-invitations").await;

    // A new visitor, with cookies of their own, opens the invitation and registers on the web.
    let mut carol = driver.session("carol", &stack.base, &shots).await;
    carol.open(&format!("/invite/{token}/")).await;
    carol.heading(&format!("Invite to {SITE}")).await;
    let landing = carol.body().await;
    assert!(landing.contains("invited to chat with root"), "{landing}");
    carol.screenshots("invite").await;
    carol
        .click(Locator::LinkText("register an account manually"))
        .await;
    carol.heading(&format!("Register on {SITE}")).await;
    carol.screenshots("register").await;
    register(&carol, "carol", "correct horse battery").await;
    carol.screenshots("registered").await;
    carol.click(Locator::LinkText("the login page")).await;
    carol.heading("Welcome, carol").await;
    let home = carol.body().await;
    assert!(home.contains(&format!("carol@{DOMAIN}")), "{home}");
    assert!(!home.contains("Manage this service"), "{home}");
    carol.screenshots("dashboard").await;
    carol.click(Locator::LinkText("Edit profile")).await;
    carol.heading("Your profile").await;
    carol.screenshots("profile").await;
    carol.open("/user/").await;
    carol.heading("Welcome, carol").await;

    // Changing the password: a mismatch is refused, then it works.
    carol.click(Locator::LinkText("Change your password")).await;
    carol.heading("Change password").await;
    carol.fill("#old", "correct horse battery").await;
    carol.fill("#new", "staple battery horse").await;
    carol.fill("#confirm", "staple battery hose").await;
    carol
        .click(Locator::XPath(
            "//main//button[normalize-space()='Change password']",
        ))
        .await;
    carol.error("The new passwords do not match.").await;
    carol.fill("#old", "correct horse battery").await;
    carol.fill("#new", "staple battery horse").await;
    carol.fill("#confirm", "staple battery horse").await;
    carol
        .click(Locator::XPath(
            "//main//button[normalize-space()='Change password']",
        ))
        .await;
    carol.notice("Your password has been changed.").await;
    carol.screenshots("passwd").await;
    // Only the new password logs in now.
    carol
        .click(Locator::XPath(
            "//header//button[normalize-space()='Log out']",
        ))
        .await;
    carol.heading("Log in").await;
    carol.screenshots("login").await;
    submit_login(&carol, "carol", "correct horse battery").await;
    carol
        .error("The username or password is not correct.")
        .await;
    submit_login(&carol, "carol", "staple battery horse").await;
    carol.heading("Welcome, carol").await;
    // The single-use invitation is used up.
    carol.open(&format!("/invite/{token}/")).await;
    let gone = carol.body().await;
    assert!(!gone.contains("register an account manually"), "{gone}");

    // The admin sees the new user.
    admin.open("/admin/users").await;
    admin.heading("Users").await;
    let users = admin.text_of("table").await;
    assert!(users.contains(&format!("carol@{DOMAIN}")), "{users}");
    assert!(users.contains(&format!("root@{DOMAIN}")), "{users}");
    admin.screenshots("admin-users").await;
    admin
        .click(Locator::Css("table a[href='/admin/user/carol/']"))
        .await;
    admin.heading("Edit user").await;
    assert_eq!(admin.value("#display_name").await, "");
    admin.screenshots("admin-user").await;

    // A new circle, and carol in it through the circle page's form.
    admin.open("/admin/circles").await;
    admin.heading("Circles").await;
    admin.fill("#name", "Book club").await;
    admin
        .click(Locator::XPath(
            "//button[normalize-space()='Create circle']",
        ))
        .await;
    admin.heading("Circle Book club").await;
    admin.notice("Circle created.").await;
    admin.select("#username", "carol").await;
    admin
        .click(Locator::XPath("//button[normalize-space()='Add user']"))
        .await;
    admin
        .wait(Locator::Css("#members a[href='/admin/user/carol/']"))
        .await;
    admin.notice("User added to circle.").await;
    // carol is no longer offered; root still is.
    let offered = admin.text_of("#username").await;
    assert!(
        !offered.contains("carol") && offered.contains("root"),
        "{offered}"
    );
    // A group chat for the circle, from the same page.
    admin.fill("#chat_name", "Book talk").await;
    admin
        .click(Locator::XPath(
            "//button[normalize-space()='Add group chat']",
        ))
        .await;
    admin.notice("New group chat added to circle.").await;
    let chats = admin.text_of("table").await;
    assert!(chats.contains("Book talk"), "{chats}");
    admin.screenshots("admin-circle").await;
    admin.open("/admin/circles").await;
    admin.heading("Circles").await;
    // The list counts the new circle's member and group chat.
    let cells = "//tr[normalize-space(td[1])='Book club']/td";
    let members = admin.text(Locator::XPath(&format!("{cells}[2]"))).await;
    let chats = admin.text(Locator::XPath(&format!("{cells}[3]"))).await;
    assert_eq!((members.as_str(), chats.as_str()), ("1", "1"));
    admin.screenshots("admin-circles").await;

    // A spare invitation, revoked from its page.
    create_invitation(&admin, "spare one").await;
    admin
        .click(Locator::XPath(
            "//button[normalize-space()='Revoke invitation']",
        ))
        .await;
    admin.heading("Invitations").await;
    let list = admin.body().await;
    assert!(!list.contains("spare one"), "{list}");
    assert!(
        list.contains("Currently, there are no pending invitations."),
        "{list}"
    );

    // The system page counts both accounts.
    admin.open("/admin/system").await;
    admin.heading("System").await;
    let accounts = admin.text(Locator::XPath("//tr[th='Accounts']/td")).await;
    assert_eq!(accounts, "2", "{}", admin.describe().await);
    admin.screenshots("admin-system").await;
    admin.open("/admin/").await;
    admin.heading(&format!("Manage {SITE}")).await;
    admin.screenshots("admin-home").await;

    // A browser that prefers German gets the German pages, and their longer texts still fit a
    // phone.
    let mut de = driver
        .session_in("admin-de", &stack.base, &shots, "de-DE")
        .await;
    de.open("/login").await;
    de.heading("Anmelden").await;
    de.screenshots("de-login").await;
    de.fill("#user", "root").await;
    de.fill("#password", "admin password 1").await;
    de.click(Locator::Css("main form button[type=submit]"))
        .await;
    de.heading("Willkommen, root").await;
    de.screenshots("de-dashboard").await;
    for (path, heading, name) in [
        ("/admin/", "The Family verwalten", "de-admin-home"),
        ("/admin/users", "Benutzer", "de-admin-users"),
        ("/admin/user/root/", "Benutzer bearbeiten", "de-admin-user"),
        ("/admin/circles", "Kreise", "de-admin-circles"),
        ("/admin/system", "System", "de-admin-system"),
        ("/admin/invitations", "Einladungen", "de-admin-invitations"),
    ] {
        de.open(path).await;
        de.heading(heading).await;
        de.screenshots(name).await;
    }
    de.select("#kind", "group").await;
    de.click(Locator::Css(
        "form[action='/admin/invitation/-/new'] button[type=submit]",
    ))
    .await;
    de.heading("Einladung").await;
    de.screenshots("de-admin-invitation").await;
    let link = de.value("#link").await;
    de.open(&format!("/invite/{}/", invite_token(&link))).await;
    de.heading(&format!("Einladung zu {SITE}")).await;
    let landing = de.body().await;
    assert!(landing.contains("root hat dich eingeladen"), "{landing}");
    de.screenshots("de-invite").await;
    de.open(&format!("/invite/{}/register", invite_token(&link)))
        .await;
    de.heading(&format!("Bei {SITE} registrieren")).await;
    de.screenshots("de-register").await;

    let mut overflow = carol.close().await;
    overflow.extend(admin.close().await);
    overflow.extend(de.close().await);
    assert!(
        overflow.is_empty(),
        "pages wider than a phone's screen (see {}): {overflow:#?}",
        shots.display()
    );
}
