from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from statemachine.core.states import EmailKind
from statemachine.mail.emails import (
    TEMPLATE_DIR,
    EmailContext,
    RenderedEmail,
    format_utc,
    provider_display_name,
    render_email,
)

ADDRESS = "ana@example.com"
REASON = "Google says the saved sign-in has expired."
RECONNECT_URL = "https://app.example.test/connections/42/reconnect?src=email&kind=x"
NEXT_ATTEMPT_AT = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>"
ADMIN_WORDING = "administrator"

CONTEXT = EmailContext(
    mailbox_address=ADDRESS,
    provider="google",
    recipient_name="Ana",
    reason=REASON,
    reconnect_url=RECONNECT_URL,
    next_attempt_at=NEXT_ATTEMPT_AT,
)

ALL_KINDS = list(EmailKind)
WITH_REASON = [EmailKind.TOKEN_REFRESH_FINAL_FAILURE, EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE]
WITHOUT_REASON = [EmailKind.TOKEN_REFRESH_RETRY, EmailKind.RECONNECTED]
WITH_LINK = [EmailKind.TOKEN_REFRESH_RETRY, *WITH_REASON]

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


class _EmailHTML(HTMLParser):
    """Collect what a mail client would see, and fail on tags that are closed out of order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open_tags: list[str] = []
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text_chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)
        if tag not in VOID_ELEMENTS:
            self.open_tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open_tags, f"</{tag}> closes nothing"
        expected = self.open_tags.pop()
        assert tag == expected, f"</{tag}> closes <{expected}>"

    def handle_data(self, data: str) -> None:
        self.text_chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_chunks).split())


def parse_html(html: str) -> _EmailHTML:
    parser = _EmailHTML()
    parser.feed(html)
    parser.close()
    assert parser.open_tags == [], f"unclosed tags: {parser.open_tags}"
    return parser


def render(kind: EmailKind, **overrides: object) -> tuple[RenderedEmail, _EmailHTML]:
    email = render_email(kind, replace(CONTEXT, **overrides))
    return email, parse_html(email.html)


def test_every_kind_has_its_three_templates() -> None:
    names = {path.name for path in TEMPLATE_DIR.iterdir()}
    for kind in EmailKind:
        assert {f"{kind}.subject.txt", f"{kind}.txt", f"{kind}.html"} <= names


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_subject_is_one_non_empty_line(kind: EmailKind) -> None:
    email, _ = render(kind)
    assert email.subject.strip()
    assert email.subject.splitlines() == [email.subject]
    assert email.subject == email.subject.strip()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_html_is_a_well_formed_document(kind: EmailKind) -> None:
    email, page = render(kind)
    assert page.tags[:2] == ["html", "head"]
    assert {"body", "h1", "p"} <= set(page.tags)
    assert "table" not in page.tags
    assert 'name="viewport"' in email.html
    assert email.subject in page.text


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_html_is_well_formed_with_every_optional_value_absent(kind: EmailKind) -> None:
    email, page = render(kind, recipient_name=None, reason=None, reconnect_url=None, next_attempt_at=None)
    assert ADDRESS in page.text
    assert ADDRESS in email.text
    assert page.hrefs == []


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_both_parts_name_the_mailbox_and_say_why_it_was_sent(kind: EmailKind) -> None:
    email, page = render(kind)
    assert ADDRESS in email.subject
    assert ADDRESS in email.text
    assert ADDRESS in page.text
    assert "You're receiving this email because" in email.text
    assert "You're receiving this email because" in page.text


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_greeting_uses_the_name_when_known(kind: EmailKind) -> None:
    named, named_page = render(kind)
    anonymous, anonymous_page = render(kind, recipient_name=None)
    assert named.text.startswith("Hi Ana,")
    assert "Hi Ana," in named_page.text
    assert anonymous.text.startswith("Hi,")
    assert "Hi," in anonymous_page.text
    assert "None" not in anonymous.text
    assert "None" not in anonymous_page.text


@pytest.mark.parametrize("kind", WITH_REASON)
def test_reason_appears_in_both_parts_where_it_applies(kind: EmailKind) -> None:
    email, page = render(kind)
    assert REASON in email.text
    assert REASON in page.text


@pytest.mark.parametrize("kind", WITH_REASON)
def test_missing_reason_leaves_no_empty_reason_line(kind: EmailKind) -> None:
    email, page = render(kind, reason=None)
    assert "What happened" not in email.text
    assert "What happened" not in page.text


@pytest.mark.parametrize("kind", WITHOUT_REASON)
def test_reason_is_not_shown_where_it_does_not_apply(kind: EmailKind) -> None:
    email, page = render(kind)
    assert REASON not in email.text
    assert REASON not in page.text


@pytest.mark.parametrize("kind", WITH_LINK)
def test_reconnect_link_appears_in_both_parts(kind: EmailKind) -> None:
    email, page = render(kind)
    assert RECONNECT_URL in email.text
    assert RECONNECT_URL in page.hrefs
    assert "&amp;kind=x" in email.html


@pytest.mark.parametrize("kind", WITH_REASON)
def test_without_a_reconnect_url_the_email_still_asks_to_reconnect(kind: EmailKind) -> None:
    email, page = render(kind, reconnect_url=None)
    assert page.hrefs == []
    assert "reconnect" in email.text.lower()
    assert "reconnect" in page.text.lower()


def test_reconnected_email_has_no_link_and_asks_nothing() -> None:
    email, page = render(EmailKind.RECONNECTED)
    assert page.hrefs == []
    assert RECONNECT_URL not in email.text
    assert "nothing you need to do" in email.text
    assert "nothing you need to do" in page.text


def test_retry_offers_the_link_as_optional() -> None:
    email, page = render(EmailKind.TOKEN_REFRESH_RETRY)
    assert "no action" in email.text.lower() or "nothing you need to do" in email.text
    assert "optional" in email.text
    assert "optional" in page.text


def test_permanent_failure_button_says_reconnect_now() -> None:
    _, page = render(EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE)
    assert "Reconnect Now" in page.text


def test_final_failure_says_it_keeps_trying_in_the_background() -> None:
    email, page = render(EmailKind.TOKEN_REFRESH_FINAL_FAILURE)
    assert "keep trying in the background" in email.text
    assert "keep trying in the background" in page.text
    assert "Reconnect Gmail" in page.text


def test_retry_shows_the_next_attempt_in_utc() -> None:
    email, page = render(EmailKind.TOKEN_REFRESH_RETRY)
    assert "28 Nov 2026, 14:05 UTC" in email.text
    assert "28 Nov 2026, 14:05 UTC" in page.text


def test_retry_without_a_next_attempt_says_nothing_about_it() -> None:
    email, page = render(EmailKind.TOKEN_REFRESH_RETRY, next_attempt_at=None)
    assert "next try" not in email.text.lower()
    assert "next try" not in page.text.lower()


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 28, 14, 5, tzinfo=UTC), "28 Nov 2026, 14:05 UTC"),
        (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "2 Jan 2026, 03:04 UTC"),
        (datetime(2026, 11, 29, 1, 5, tzinfo=timezone(timedelta(hours=11))), "28 Nov 2026, 14:05 UTC"),
    ],
)
def test_format_utc(moment: datetime, expected: str) -> None:
    assert format_utc(moment) == expected


def test_naive_next_attempt_is_refused() -> None:
    naive = datetime(2026, 11, 28, 14, 5)  # noqa: DTZ001 - the naive value is the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        render_email(EmailKind.TOKEN_REFRESH_RETRY, replace(CONTEXT, next_attempt_at=naive))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_hostile_address_and_reason_are_escaped_in_html_and_literal_in_text(kind: EmailKind) -> None:
    address = f"{HOSTILE}@example.com"
    email, page = render(kind, mailbox_address=address, reason=HOSTILE, recipient_name=HOSTILE)
    assert "script" not in page.tags
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert address in page.text
    assert address in email.text
    assert "&lt;" not in email.text
    assert address in email.subject
    assert "&lt;" not in email.subject


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_crlf_cannot_start_a_second_subject_line(kind: EmailKind) -> None:
    injected = "\r\nBcc: victim@example.com\r\n\r\n<b>body</b>"
    email, page = render(
        kind,
        mailbox_address=f"ana@example.com{injected}",
        reason=injected,
        recipient_name=injected,
    )
    assert email.subject.splitlines() == [email.subject]
    assert "\r" not in email.subject
    assert "\n" not in email.subject
    assert "Bcc: victim@example.com" in email.subject
    assert "<b>" not in email.html
    assert "b" not in page.tags


@pytest.mark.parametrize("separator", ["\n", "\r", "\u2028", "\x85", "\x0b", "\t"])
def test_any_line_break_in_the_subject_is_collapsed(separator: str) -> None:
    email = render_email(EmailKind.RECONNECTED, replace(CONTEXT, mailbox_address=f"a{separator}{separator}b@x"))
    assert email.subject.splitlines() == [email.subject]
    assert "a b@x" in email.subject


def test_admin_wording_appears_only_when_admin_is_true() -> None:
    kind = EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE
    admin, admin_page = render(kind, admin=True)
    plain, plain_page = render(kind, admin=False)
    assert ADMIN_WORDING in admin.text
    assert ADMIN_WORDING in admin_page.text
    assert ADMIN_WORDING not in plain.text
    assert ADMIN_WORDING not in plain_page.text


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k is not EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE])
def test_other_kinds_never_mention_the_administrator(kind: EmailKind) -> None:
    email, page = render(kind, admin=True)
    assert ADMIN_WORDING not in email.text
    assert ADMIN_WORDING not in page.text


@pytest.mark.parametrize(
    ("provider", "expected"),
    # an unregistered name is title-cased
    [
        ("google", "Gmail"),
        ("Google", "Gmail"),
        ("microsoft", "Outlook / Microsoft 365"),
        ("yahoo", "Yahoo"),
        ("big_mail", "Big Mail"),
    ],
)
def test_provider_display_name(provider: str, expected: str) -> None:
    assert provider_display_name(provider) == expected


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_emails_name_the_provider(kind: EmailKind) -> None:
    gmail, gmail_page = render(kind, provider="google")
    other, other_page = render(kind, provider="yahoo")
    assert "Gmail" in gmail.subject
    assert "Gmail" in gmail.text
    assert "Gmail" in gmail_page.text
    assert "Yahoo" in other.subject
    assert "Yahoo" in other.text
    assert "Yahoo" in other_page.text
    assert "Gmail" not in other.text
    assert "Gmail" not in other_page.text
    outlook, outlook_page = render(kind, provider="microsoft")
    assert "Outlook / Microsoft 365" in outlook.subject
    assert "Outlook / Microsoft 365" in outlook.text
    assert "Outlook / Microsoft 365" in outlook_page.text


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,hi", "//evil.test/x"])
def test_reconnect_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        render_email(EmailKind.TOKEN_REFRESH_FINAL_FAILURE, replace(CONTEXT, reconnect_url=url))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid EmailKind"):
        render_email("../../etc/passwd", CONTEXT)  # type: ignore[arg-type]  # a str where EmailKind is due


def test_kind_given_as_its_string_value_renders() -> None:
    by_value = render_email("reconnected", CONTEXT)  # type: ignore[arg-type]  # values come from DB TEXT columns
    assert by_value == render_email(EmailKind.RECONNECTED, CONTEXT)
