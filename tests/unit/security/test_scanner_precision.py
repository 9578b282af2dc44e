"""#18 item 4: the scanner on real text. For each behaviour: the secret it still (or newly)
catches, and the look-alike it no longer flags. The corpus-level figures are in
bench/audit_secrets.py; these pin each rule."""

from __future__ import annotations

import pytest

from bastion.security.scanner import MASK, SecretScanner

# Random values (no runs, no ascending sequences): what a real credential looks like.
HEX32 = "29b2ff5ae637052b3839659c78fdf91d0aaa627e00a3170ffb76dc37c1eaaac4"
B62 = "hGAkWvj7FAc9QeWJKY40uvSwMFLZDe1f8rES"
PW = "Tq8#vLm2!xRz"


def flagged(text: str) -> bool:
    return bool(SecretScanner().scan(text))


def masked(text: str, value: str) -> bool:
    out = SecretScanner().redact(text)
    return value not in out and MASK in out


# ---- vendor documentation examples and placeholders ------------------------------------------
@pytest.mark.parametrize("text", [
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "export AWS_SECRET_ACCESS_KEY=je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "AKIAZZZZZZZZZZZZZZZZ",
    'apiKey: "AIzaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"',
    'SNYK_TOKEN = "12345678-ABCD-ABCD-ABCD-1234567890AB"',
    '"token4": "xoxp-572370529330-573807301142-572331691188-####################"',
    "api_key = <your-api-key>",
])
def test_documented_examples_and_placeholders_are_not_secrets(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize(("text", "value"), [
    ("aws_access_key_id = AKIAUJZDEGXDNCF32EPF", "AKIAUJZDEGXDNCF32EPF"),
    ("aws_secret_access_key = 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",
     "2hpChYgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kj"),
    (f"ghp_{B62}", f"ghp_{B62}"),
    ('"bot_token": "xoxb-47834520726-N3otsrwj8Cf99cs8GhiRZsX1"',
     "xoxb-47834520726-N3otsrwj8Cf99cs8GhiRZsX1"),
])
def test_real_looking_keys_of_the_same_formats_are_still_masked(text: str, value: str) -> None:
    assert masked(text, value)


# ---- public keys, digests, ids, ciphertext -----------------------------------------------------
SSH_ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Wf0yQ+bjlCTUv0OiKcxv47noGqqT8sovZP8p6g7Qo"
               " ci@host0")


@pytest.mark.parametrize("text", [
    SSH_ED25519,
    f"ssh_authorized_keys:\n  - {SSH_ED25519}",
    f'"public_key": "{SSH_ED25519}"',
    f"{HEX32}  release.tar.gz",
    f"image: registry.example.org/app@sha256:{HEX32}",
    '"integrity": "sha512-nBQPCNd25KnMSdnzGApuss0gkhja8F0yvVwFweTawvYQ3UxwnXPSgSCmuuxJUldhMkFyK'
    'IA93vPyrtIF6TPd3A=="',
    "commit 9a038989604e8da62ecddbe2094b16ce1b778be1",
    '"id": "3f6c1d2e-8b4a-4f0e-9c7d-2a1b5e6f7a8c",',
    "data: dGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
    "db-password: ENC[AES256_GCM,data:O+5l4g==,iv:c/dS4BCBMbnKsXYuzBuCuVQt8RV9bOv5HgdpL+iwmns="
    ",tag:X8+xHH1r2NUP5Ts2lQgRvA==,type:str]",
    "pk_live_j5krY8XTgIcDaHDb3YrsAfCl",
    '<input type="hidden" name="authenticity_token" value="7SWa-Fo1_hsC6oovfBsJFLGPUl2EhkSWPbJ'
    'hWANwgaJWBDl1vxd9VNqXTNAefsJqzIRYaZEfYZLffa31rw8zJA">',
    "primaryKey=x6CYJpHZFmO8J0ZKMbspHoKjWeWvPJ",
])
def test_public_shapes_in_their_usual_context_are_not_secrets(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize(("text", "value"), [
    (f"SECRET_KEY={HEX32}", HEX32),
    (f"X-Api-Key: {HEX32.upper()}", HEX32.upper()),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
     "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
    ("sk_live_j5krY8XTgIcDaHDb3YrsAfCl", "sk_live_j5krY8XTgIcDaHDb3YrsAfCl"),
    (f"key material {B62} end", B62),
    ("sourcegraph: 6d2FabeB6ADd229Bc199FabA28fD3efb57dF0bD3",
     "6d2FabeB6ADd229Bc199FabA28fD3efb57dF0bD3"),  # mixed-case hex is no digest
])
def test_hex_tokens_private_keys_and_secret_keys_are_masked(text: str, value: str) -> None:
    assert masked(text, value)


# ---- assignments: the name decides, in any syntax ----------------------------------------------
@pytest.mark.parametrize("text", [
    f'dbPassword = "{PW}"',
    f"PGPASSWORD={PW}",
    f'DB_PASSWORD := "{PW}"',
    f'mailgun_TOKEN ::= "{PW}"',
    f'$lookerToken .= "{PW}"',
    f'"travisToken" => "{PW}"',
    f'System.setProperty("ADOBE_TOKEN", "{PW}")',
    f"<password>{PW}</password>",
    f'<add key="ClearTextPassword" value="{PW}" />',
    f'if ("{PW}" == password) {{',
    f"--softlayer-api-key {PW}",
    f"os.environ['HUGGINGFACEHUB_API_TOKEN'] = '{PW}'",
    f"cloudant_pw='{PW}'",
    f"discordToken = '{470414232867269873}'",
    'password = "SuperSecret"',  # a weak password, not the name of one
])
def test_values_given_to_secret_names_are_masked(text: str) -> None:
    assert flagged(text), text


@pytest.mark.parametrize("text", [
    "password_length: 16",
    "token_url = https://github.com/login/oauth/access_token",
    'public_key = "9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit"',
    "csrf-token=Mj2qykJO5rELyHgezQ69nzUX0i3OH67V7+V4eUrLfpuyOuxmiW9rhROG/Whikle15syazJOkrjJa3U2",
    "    - secretKey: api-key",
    "password: ${DB_PASSWORD}",
    "password: {{ .Values.password }}",
    'password = os.getenv("DB_PASSWORD")',
    "administrator_login_password = var.db_password",
    'password: "real_key"',
    "Password: forgotten",
    "token_count = 4123  # tokens per request",
    'some_key = "real_secret"',
    'signing_key_alias = "Kx9mQ2vR7tLp"',
    "keyPressed = true",
])
def test_metadata_references_and_identifiers_are_not_secrets(text: str) -> None:
    assert not flagged(text), text


# ---- command lines, manifests, vendor formats ---------------------------------------------------
def test_curl_user_password_is_masked_unless_a_variable() -> None:
    assert masked("curl -s --user 'api:d2LkV78zLx!t' https://api.mailgun.net/v3", "d2LkV78zLx!t")
    assert masked("curl -u developer:yqDVtk https://infinispan:11222/rest", "yqDVtk")
    for text in ('curl -u "${USER}:${PASS}" https://x', "curl -u username:password https://x",
                 "curl -u <user:password> https://test.com", "curl -i -u 'test:test'"):
        assert not flagged(text), text


def test_kubernetes_secret_data_is_masked_configmap_data_is_not() -> None:
    secret = "apiVersion: v1\nkind: Secret\ndata:\n  extra: YWRtaW46cGFzc3dvcmQ=\nmetadata:\n"
    assert masked(secret, "YWRtaW46cGFzc3dvcmQ=")
    short = "apiVersion: v1\nkind: Secret\ndata:\n  extra: YmFyCg==\n"
    assert not flagged(short)  # 4 bytes: too short to be a credential
    other = ("kind: Secret\nmetadata:\n  name: s\n---\n"
             "kind: ConfigMap\ndata:\n  mode: RGVmYXVsdA==\n")
    assert not flagged(other)


@pytest.mark.parametrize(("text", "value"), [
    ('export BUNDLE_GEMS__CONTRIBSYS__COM="cafebabe:deadbeef"', "deadbeef"),
    ("343ea45721923ed956e2b38c31db76aa-us30", "343ea45721923ed956e2b38c31db76aa-us30"),
    ("client-secret: QtT8Q~9C-_Ij~RouHVpD2Tuf3oHWGh.DQ3kcjbAn",
     "QtT8Q~9C-_Ij~RouHVpD2Tuf3oHWGh.DQ3kcjbAn"),
    ("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", "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"),
    ("GR1348941qsajAIxNKu8iS2G8NPRVdD53X83", "GR1348941qsajAIxNKu8iS2G8NPRVdD53X83"),
    ('String t = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0LXVzZXIifQ.";',
     "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0LXVzZXIifQ."),  # alg "none": still a bearer token
    ("https://hooks.slack.com/workflows/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",
     "gn7u31tfhm9gll2tutlysb9dhreto16rjnc8k5fgvqbg"),
    # prefixed hex or one-case bodies, which the entropy guess leaves alone
    ("gem push: rubygems_" + HEX32[:48], "rubygems_" + HEX32[:48]),
    ("sonar.login=sqp_" + HEX32[:40], "sqp_" + HEX32[:40]),
    ("host = dapi" + HEX32[:32], "dapi" + HEX32[:32]),
    ("sourcegraph: sgp_local_" + HEX32[:40], "sgp_local_" + HEX32[:40]),
    ("stripe: rk_prod_" + B62, "rk_prod_" + B62),
])
def test_vendor_formats_are_masked(text: str, value: str) -> None:
    assert masked(text, value)


def test_slack_words_are_not_tokens() -> None:
    assert not flagged("https://indieweb.org/images/3/35/2018-250-xoxo-indieweb-1.jpg")
    assert not flagged("xoxb-xoxb-my-bot-token")


def test_held_values_are_masked_even_when_they_look_like_placeholders() -> None:
    s = SecretScanner(["AKIAIOSFODNN7EXAMPLE", "12345678-pass"])
    assert MASK in s.redact("key AKIAIOSFODNN7EXAMPLE") and MASK in s.redact("p=12345678-pass")


def test_random_resource_names_in_url_paths_are_not_secrets_credential_urls_are() -> None:
    doc = "1W7KCxOxP-1Fy5EyF2lbJGE2WuKmu5v0suYqoHas1jRM"
    assert not flagged(f"see https://docs.example.com/document/d/{doc}/edit")
    assert not flagged(f"GET https://img.example.com/image?q={B62}")
    # a path or query that names a credential keeps the guess
    assert masked(f"POST https://hooks.example.com/webhooks/123/{B62}", B62)
    assert masked(f"https://api.example.com/v1?access_token={B62}", B62)


def test_a_run_of_repeated_digits_in_ids_does_not_make_a_token_a_placeholder() -> None:
    token = "xoxb-511111111-31111111111-3111111111111-f4c9a07e31d5b8a260"
    assert masked(f"slack: {token}", token)
    assert not flagged("xoxb-511111111-31111111111-1111111111111111")


def test_a_near_miss_of_a_known_format_is_not_claimed_by_the_entropy_guess() -> None:
    assert not flagged("AIza" + B62 + "Qx9Tz4")  # 42 characters after AIza: not Google's shape
    assert masked("AIza" + B62[:35], "AIza" + B62[:35])  # 35: Google's API key format


# ---- labelled digests, data URIs, key blobs, key ids (general public shapes) -------------------
@pytest.mark.parametrize("text", [
    # a hash labelled by its algorithm (go.sum, ssh-keygen -l, checksums)
    "github.com/stretchr/testify v1.8.4 h1:CcVxjf3Q8PM0mHUKJCdn+eZZtm5yQwehR5yeSVQQcUk=",
    "256 SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s user@host (ED25519)",
    # the payload of a data URI is embedded content
    '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4'
    '2mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==">',
    # an OpenSSH public key blob without its type word
    "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7vbqajDhA7Vr9Z2x1UeQ7sW9V0m3nJ8k5l6p7q8r9s0t1u2v3w",
    # a JWK key id, a numbered id header
    '"kid": "NjVBRjY5MDlCMUIwNzU4RTA2QzZFMDQ4QzQ2MDAyQjVDNjk1RTM2Qg"',
    f"x-amz-id-2: {B62}=",
    # the whole value of a public name, past its first separator
    "// CloudFront-Signature: Ixn4bF1LLrLcB8XG-t5bZbIB0vfwSF2s4gkef~PcNBdx73MVvZD3v8DZ5GzcqNrybM"
    "iqdYJY5KqK6vTsf5JXDgwFFz-h98wdsbV-izcuonPdzMHp4Ay4qyXM6Ed5j",
    # a lookup is a reference, not a value
    "password=request.form['password']",
])
def test_labelled_digests_data_uris_key_blobs_and_key_ids_are_not_secrets(text: str) -> None:
    assert not flagged(text)


def test_a_random_value_after_an_unrelated_label_is_still_a_guess() -> None:
    assert masked(f"note: {B62}", B62)  # only a digest label or data URI makes it public


# ---- credential forms without the usual operator or user ---------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("redis://:Rk9pLmQ2zX@cache.internal:6379/0", "Rk9pLmQ2zX"),  # empty user
    ("machine api.example.net login deploy password Rq7vLp2zNx", "Rq7vLp2zNx"),  # .netrc
    ("secrete = A,.:-@*?!x", "A,.:-@*?!x"),  # a comma inside an unquoted value
    ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: " + PW + "\n",
     PW),  # stringData holds plain values
    ("apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n"
     "  .dockerconfigjson: |\n    eyJhdXRocyI6eyJyZWcuZXhhbXBsZS5jb20iOnsiYXV0aCI6ImRYTmxjanB3WVhOe"
     "iJ9fX0=\n", "eyJhdXRocyI6eyJyZWcuZXhhbXBsZS5jb20iOnsiYXV0aCI6ImRYTmxjanB3WVhOeiJ9fX0="),
])
def test_credentials_without_the_usual_operator_or_user_are_masked(text: str, value: str) -> None:
    assert masked(text, value)


def test_netrc_needs_its_shape_and_stringdata_its_secret() -> None:
    assert not flagged("a machine learning password reset flow")
    assert not flagged("kind: ConfigMap\nstringData:\n  mode: Tr0ub4dor-Qz7\n")
    assert not flagged("kind: Secret\nstringData:\n  password: ${DB_PASSWORD}\n")


@pytest.mark.parametrize("text", [
    f'token: str = "{PW}"',  # a type annotation before the operator
    f'const api_key: string = "{PW}"',
    f"  password: |\n    {PW}\n",  # a YAML block scalar
    f"password: !!str {PW}",  # a YAML tag
    f"ENV DB_PASSWORD {PW}",  # Dockerfile ENV without '='
    f"q=1&password%3D{PW}",  # URL-encoded '='
    f"wpa_psk={PW}",  # a pre-shared key
])
def test_typed_block_tagged_and_encoded_assignments_are_masked(text: str) -> None:
    assert masked(text, PW)


@pytest.mark.parametrize("text", [
    "token: Optional[str] = None", 'path: str = "/usr/local/lib/python3"',
    "password: |\n  ${DB_PASSWORD}\n", "ENV PATH /usr/local/bin:/usr/bin",
])
def test_typed_and_block_forms_keep_references_and_other_names_public(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("text", [
    f"-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAdFiEE{B62}\n-----END PGP SIGNATURE-----",
    f"-----BEGIN CERTIFICATE REQUEST-----\nMIICvDCCAaQCAQAwdzEL{B62}\n"
    "-----END CERTIFICATE REQUEST-----",  # every PEM label without PRIVATE is public
    f'"cert": "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ{B62}"',  # DER
    f'"content_base64sha256": "{B62}="',  # a name that ends in a digest word
])
def test_public_pem_blocks_der_certificates_and_digest_names_are_not_secrets(text: str) -> None:
    assert not flagged(text)


def test_private_pem_blocks_and_der_private_keys_are_still_secrets() -> None:
    assert flagged(f"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0w{B62}\n"
                   "-----END ENCRYPTED PRIVATE KEY-----")
    assert flagged(f'"k": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{B62}"')


def test_a_yaml_passphrase_under_a_compound_secret_key_runs_to_the_end_of_line() -> None:
    phrase = "correct horse battery staple"
    assert masked(f"  db_password: {phrase} # rotated", phrase)
    for prose in ("Password: the one you chose", "token: 12 tokens used"):
        assert not flagged(prose), prose


@pytest.mark.parametrize("text", [
    '-H "Authorization: SSWS 00Kq8zLw3vPmNx7bRt"',  # any Authorization scheme
    f"sshpass -p '{PW}' ssh deploy@host",  # command-line password flags
    f"mysql -uroot -p{PW} appdb",
    f"docker login -u deploy -p {PW} registry.example.net",
    f"redis-cli -h cache -a {PW} ping",
    f"htpasswd -b .htpasswd admin {PW}",
    f'echo "{PW}" | docker login --password-stdin -u deploy',
    f'<entry key="db.password">{PW}</entry>',  # an XML attribute names the element's text
])
def test_command_line_passwords_auth_schemes_and_named_elements_are_masked(text: str) -> None:
    assert flagged(text)


@pytest.mark.parametrize("text", [
    "mysql -u root -p appdb", "ssh -p 2222 host", "docker run -p 8080:80 nginx",
    "docker login -p $REGISTRY_PASSWORD r", 'echo "$TOKEN" | docker login --password-stdin',
    "Authorization header missing in request", '<param name="token_url">https://x</param>',
])
def test_flags_without_a_password_and_references_are_not_secrets(text: str) -> None:
    assert not flagged(text)


def test_a_random_value_given_to_a_descriptive_name_is_data_not_a_credential() -> None:
    assert not flagged(f"sumOfExposures = {B62}x9Q;")  # words that say what the value is
    assert not flagged(f'accessibilityOptionValue = "{B62}"')
    # a name with a credential word, a one-word name, or a token's own '=' keep the guess
    assert masked(f"clientValue = {B62}", B62)
    assert masked(f"sourcegraph: {B62}", B62)
    assert masked(f"const KEY = {B62}", B62)


def test_an_access_key_id_is_the_credential_half_of_its_pair() -> None:
    assert masked('SUMO_ACCESS_ID = "suGyI5imvADdvU"', "suGyI5imvADdvU")
    assert masked("ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tQ9mJx2Kp7wRz3N", "LTAI5tQ9mJx2Kp7wRz3N")
    for text in ("accessId: 1234567890123", "export SUMOLOGIC_ACCESSID=XXXXXXXXXXXXXX",
                 "aws_access_key_id = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"):
        assert not flagged(text), text


def _der_keys() -> tuple[str, str]:
    import base64

    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 2048)
    private = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.DER,
                                           ser.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def test_a_der_private_key_is_a_secret_however_long_its_public_key_is_not() -> None:
    private, public = _der_keys()
    assert masked(f"GCP_KEY={private}", private)  # 1.6 KB: longer than any entropy guess
    assert masked(f"key material {private} end", private)
    assert not flagged(f"public key {public}")  # SubjectPublicKeyInfo


@pytest.mark.parametrize("text", [
    f"token: ghp_{B62[:6]}... ({B62}...)",  # a display cut with an ellipsis
    "blob " + (B62 * 16)[:600],  # 600 token characters with no known format: encoded data
])
def test_elided_displays_and_long_blobs_are_not_entropy_guesses(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("name", ["secretName", "tokenUrl", "secretArn", "token_type", "keyName",
                                  "authDomain", "authUser", "objectKey", "password_salt", "salt",
                                  "iv", "state"])
def test_values_of_names_about_a_secret_or_public_by_design_are_not_secrets(name: str) -> None:
    assert not flagged(f'"{name}": "{B62}"')  # neither the assignment nor the entropy guess


def test_names_about_a_secret_do_not_shadow_the_secret_itself() -> None:
    for name in ("client_secret", "secretKey", "storage_key", "privateKey", "auth_token"):
        assert masked(f'"{name}": "{B62}"', B62), name


@pytest.mark.parametrize("value", [
    "<token>", ":token", "{token}", "vault:secret/data/app#token", "ref+vault://app/token",
    "op://vault/item/password", "projects/p/secrets/api-token/versions/1", "!Ref ApiToken",
])
def test_references_to_secret_stores_templates_and_symbols_are_not_secrets(value: str) -> None:
    assert not flagged(f"api_token = {value}")
    assert not flagged(f'"password": "{value}"')


def test_a_kubernetes_tls_secret_masks_its_key_not_its_certificate() -> None:
    import base64

    cert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq\n"
                            b"-----END CERTIFICATE-----\n").decode()
    key = base64.b64encode(b"-----BEGIN RSA PRIVATE KEY-----\nMIIEogIBAAKCAQEArUXBHSveLWur\n"
                           b"-----END RSA PRIVATE KEY-----\n").decode()
    text = (f"apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {cert}\n"
            f"  tls.key: {key}\n")
    out = SecretScanner().redact(text)
    assert cert in out and key not in out


def test_shell_parameter_expansions_keep_only_a_plausible_default() -> None:
    assert not flagged('curl -k -u "admin:${ADMIN_PASSWORD:-admin}" https://x')
    assert not flagged("x=${API_TOKEN:?set API_TOKEN first}")
    assert not flagged("curl -u user:\\$PASS https://x")  # an escaped reference
    assert masked(f"DB=${{DB_PASSWORD:-{PW}}}", PW)  # a hard-coded default is a secret


def test_a_bearer_token_that_is_a_name_is_a_placeholder() -> None:
    assert not flagged('-H "Authorization: Bearer YOUR_ACCESS_TOKEN"')
    assert masked(f"Authorization: Bearer {B62}", B62)


# ---- generalising rules (dev half only; examples written here, not taken from the corpus) ----
@pytest.mark.parametrize("text", [
    'routingKey = "orders.created.v2"',
    '"storageKey": "uploads/2024/11/c9f8e7d6b5a4.png",',
    "build_key = '20241105.3+gab12cd3'",
    "partition_key: tenant-42-eu-west",
])
def test_an_ordinary_key_name_needs_key_material(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize(("text", "value"), [
    (f'routingKey = "{B62}"', B62),
    (f"sl_key = {HEX32}", HEX32),
    ("api_key = 'Tq8vLm2xRz'", "Tq8vLm2xRz"),  # api key: any plausible value
])
def test_key_material_under_an_ordinary_key_name_and_any_api_key_are_masked(
        text: str, value: str) -> None:
    assert masked(text, value)


@pytest.mark.parametrize("value", ["abc123", "AbCdEf123", "qwerty789", "zyx987cba", "abcdefg456"])
def test_values_made_of_sequences_are_placeholders(value: str) -> None:
    assert not flagged(f'password = "{value}"')
    assert not flagged(f"SERVICE_ACCESS_KEY: {value}")


def test_a_password_with_short_sequences_inside_is_still_a_password() -> None:
    assert masked('password = "abc7Qx!def2Lm"', "abc7Qx!def2Lm")
    assert masked(f'password = "{PW}"', PW)


@pytest.mark.parametrize("text", [
    'auth: "Bearer ${TOKEN}"',
    'secret = "{{ vault_prefix }}-{{ env }}"',
    "password: \"$(pass show db/prod)\"",
    'client_secret = "<%= ENV["CLIENT_SECRET"] %>"',
    'token = "#{api_token}"',
    "password = %DB_PASSWORD%",
])
def test_interpolated_values_are_filled_in_elsewhere(text: str) -> None:
    assert not flagged(text)


def test_a_literal_secret_next_to_an_interpolation_is_still_masked() -> None:
    assert masked(f'secret = "${{PREFIX}}-{B62}"', B62)
    # braces and dollars inside a password are not interpolations
    assert flagged('password = "k{{m}z)b${f]l(g[h>-_$#nv}}"')


@pytest.mark.parametrize("text", [
    '"secretMessage": "the door code changes on monday"',
    "credential_process = aws-vault exec prod --json",
    'git config credential.helper "store --file ~/.git-creds"',
    "password_prompt = Enter the vault password",
])
def test_names_of_text_and_programs_about_a_secret_are_metadata(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("text", [
    'ssh_authorized_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Wf0yQ+bjlCTUv0OiKcxv47noGq'
    'qT8 ci"',
    '"secretRef": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-Xk9mQ2",',
    "api_key: apiKey",
    "password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6638643965303864623735663534\n",
    "db_password: !secret db_password",
    "encrypted_password = U2FsdGVkX1+q8vT3xLmZ8wPa2R9Vn4Yb6Tc1Ud3We5Xf",
    'password_hash: "$2b$12$KIXQJQ3eEw3W0r2m9P1pUe0Kx5c8n5VZs9w5H1jJ2k4Y1Z2X3c4d6"',
    "htpasswd: admin:$apr1$Zq9vT3xL$Kq8vT3xLmZ8wPa2R9Vn4Y.",
    "spec:\n  encryptedData:\n    password: AgBy3i4OJSWK+PiTySYZZA9vT3xLmZ8wPa2R9Vn4Yb6T==\n",
    "secret_file = /run/secrets/db_password.txt",
])
def test_public_keys_arns_names_vault_ciphertext_hashes_and_paths_are_not_secrets(
        text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("text", [
    "postgres://app:${POSTGRES_PASSWORD}@db:5432/app",
    "redis://:$REDIS_PASSWORD@cache:6379/0",
    "mongodb://<user>:<password>@cluster0.example.net/test",
    "amqp://guest:{rabbit_password}@mq:5672/",
])
def test_a_url_password_that_is_a_reference_is_not_a_secret(text: str) -> None:
    assert not flagged(text)


def test_a_literal_url_password_is_still_masked() -> None:
    assert masked("postgres://app:Tq8vLm2xRz@db:5432/app", "Tq8vLm2xRz")


@pytest.mark.parametrize(("text", "secret"), [
    ('curl -H "Authorization: Splunk <hec_token>" https://x', False),
    ('curl -H "Authorization: Token token=\\"$TOKEN\\"" https://x', False),
    (f"Authorization: Splunk {B62}", True),
])
def test_an_unquoted_authorization_value_is_judged_by_its_credentials(
        text: str, secret: bool) -> None:
    assert flagged(text) is secret


@pytest.mark.parametrize("text", [
    "webpack:///./src/components/Zq9vT3xLmZ8wPa2R.tsx",
    "uploads/q8vT3xLmZ8wPa2R9Vn4Yb6Tc1Ud.png",
    "cdn: Kq8vT3xLmZ8wPa2R9Vn4Yb6Tc1.cloudfront.net",
])
def test_a_random_file_or_host_name_is_not_a_guess(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("text", [
    '"keywords": ["security", "secret", "scanner"],',
    '<entry key="password.encoder">bcrypt</entry>',
    "authStrategy: 'oauth2-client-credentials'",
    'PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]',
    'mapbox_SECRET := "abc123def456"',
    '"acme_API_KEY": "__TOKEN__",',
    "fastly_PASSWORD=\"@token\"",
    "linode_SECRET = \"'+token+'\"",
])
def test_list_items_handlers_template_markers_and_concatenations_are_not_secrets(
        text: str) -> None:
    assert not flagged(text)


def test_a_call_argument_after_a_quoted_secret_name_is_still_masked() -> None:
    assert masked(f'Map.of("user", "bob", "password", "{PW}")', PW)
    assert masked(f'System.setProperty("DB_TOKEN", "{B62}")', B62)


@pytest.mark.parametrize("text", [
    'PEM_HEADER = "-----BEGIN RSA PRIVATE KEY-----"',
    'if line.startswith("-----BEGIN PRIVATE KEY-----"):',
    "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\n<your private key here>\n-----END PRIVATE KEY-----",
    'private_key: "-----BEGIN PRIVATE KEY-----\n${PRIVATE_KEY}\n-----END PRIVATE KEY-----"',
    "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\\n"
    "-----END EC PRIVATE KEY-----",
])
def test_a_private_key_header_without_a_key_is_not_a_secret(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize("text", [
    "-----BEGIN RSA PRIVATE KEY-----",  # a header that starts a key (the rest may follow)
    "-----BEGIN PRIVATE KEY-----\nnot base64 but the body of a key\n-----END PRIVATE KEY-----",
    'key = "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIGq8vT3xLmZ8wPa2R9Vn4Yb6Tc1Ud3We5Xf7Zg0Ah2Bj'
    '4oAoGCCqGSM49\\n-----END EC PRIVATE KEY-----"',
])
def test_a_private_key_block_with_a_body_is_still_a_secret(text: str) -> None:
    assert flagged(text)


@pytest.mark.parametrize("text", [
    "token = tokens[i]",
    "auth=(username, password),",
    'auth-source-pass-filename "~/.password-store"',
    "password_file: ./secrets/db-password",
])
def test_indexes_tuples_relative_paths_and_file_names_are_not_secrets(text: str) -> None:
    assert not flagged(text)


# ---- learned from Nosey Parker's rule examples (bench/data/secrets_dev_extra.jsonl) ----------
@pytest.mark.parametrize(("text", "value"), [
    # a dotenv/shell line's value is a literal, even a lower-case word
    ("REACT_APP_AUTH_PASSWORD=whiteduke", "whiteduke"),
    ("# SMTP_PASS=bluefrogs", "bluefrogs"),
    ("export DB_PASSWORD=hunterxy", "hunterxy"),
    # a hard-coded password compared in a condition (the colon opens the block)
    ('if username == "admin" and password == "team10":', "team10"),
    # command lines: -u USER -p PASSWORD, PowerShell's -Password
    (r"psexec \\10.0.0.7 -u Administrator -p braksha cmd", "braksha"),
    ("Connect-VIServer -Server vc1 -User admin@vsphere.local -Password VMware1!", "VMware1!"),
    # credential objects built from literals
    ('new NetworkCredential("ci@example.org", "vzihlaquknriqlht")', "vzihlaquknriqlht"),
    ('requests.get(url, auth=("bob", "Xk9rT2vqLm"))', "Xk9rT2vqLm"),
    ('new DirectoryEntry("LDAP://dc1", "corp\\\\svc", "Rrhh1234x")', "Rrhh1234x"),
    # prose
    ("The default Password is 'blooberry'", "blooberry"),
    ('ensure the password is "centipede" and press On', "centipede"),
    # vendor formats
    ("var k = 'key-46cebd38c59ac222e6cf991581411eaf'", "key-46cebd38c59ac222e6cf991581411eaf"),
    ("nuget push x.nupkg --api-key oy2l53fxd7xcf99dnyrqewssedgopshuticofclpespbyi",
     "oy2l53fxd7xcf99dnyrqewssedgopshuticofclpespbyi"),
    ("STREAM=live_126031192_tiX3sbwIzL9VmkecdxioBMA1LJ9S4m",
     "live_126031192_tiX3sbwIzL9VmkecdxioBMA1LJ9S4m"),
    ("license: eu01xxaa7460e1ea3abdfbbbd36e85c10cd0NRAL",
     "eu01xxaa7460e1ea3abdfbbbd36e85c10cd0NRAL"),
    ("admin:NRAA-4780f48c47df5882dbec3fd82c7", "NRAA-4780f48c47df5882dbec3fd82c7"),
    ("-Dsonar.login=5524bf449ca45fcace54698371466398321f3a82",
     "5524bf449ca45fcace54698371466398321f3a82"),
    ("url: https://outlook.office.com/webhook/2f92c502-7feb-4a6c-86f1-477271ae576f@990414fa-d0a3"
     "-42f5-b740-21d865a44a28/IncomingWebhook/54e43eb586f14aa9984d5c0bec3d5050/539ce6fa-e9aa-413f"
     "-a79b-fb7e89ee0a1b", "IncomingWebhook/54e43eb586f14aa9984d5c0bec3d5050"),
])
def test_credentials_learned_from_noseyparker_are_masked(text: str, value: str) -> None:
    assert masked(text, value)


@pytest.mark.parametrize("text", [
    "mysql -u root -p mydatabase",  # mysql's -p with a space prompts; the word is a database
    "psexec \\\\host -u User -p $Password -i calc.exe",  # a variable
    "this.addPassword = '#add-password';",  # a CSS selector: the name again
    'sb.append("MasterUserPassword: " + getMasterUserPassword() + ",");',  # between literals
    'usernameLabel:"Username or email:",passwordLabel:"Password:",rememberMe:"Remember me:"',
    'String usernamePassword = "application:" + appKey + ":" + appSecret;',  # a label
    'let accountKey = Buffer.from("accountKey", "base64");',  # an encoding name
    "put '/forgot-password' => \"cms/sites/passwords#update\", as: 'update_password'",  # a route
    '"/en/docs/creating-a-strong-password":"/en/enterprise-server@3.0/auth"',  # URL paths
    "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",  # an age recipient
    "x = PASSWORD=foo",  # not a dotenv line: a lower-case word stays a word
    'Reset the password if it is "wrong"',  # prose without a plausible value
])
def test_lookalikes_learned_from_noseyparker_are_not_secrets(text: str) -> None:
    assert not flagged(text)


# ---- secretlint's rule tests and new draws of gitleaks' generated cases (dev data) ------------
AZURE = "ECF6Q~rNa3.6rNQntZVe0~Xll~78fwFSYPPG611"  # dots and tildes: no 16-character run
CF_ORIGIN = "v1.0-aaa334dc886f30631ba0a610-" + (HEX32 * 3)[:146]  # a Cloudflare Origin CA key


@pytest.mark.parametrize(("text", "value"), [
    (f'\\"pass\\": \\"{AZURE}', AZURE),
    (f"cloudflare_token: {CF_ORIGIN}", CF_ORIGIN),
    ("databricks_pat = 'dapiFEDCBA9876543210FEDCBA9876543210'", "dapiFEDCBA9876543210FEDCBA"),
    ("ageToken = AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
     "AGE-SECRET-KEY-1QQQQ"),  # Q runs are no filler: x, z, a, 0, 1, *, #, . and - are
    ("Authorization: Basic dXNlcjpUcTgjdkxtMiF4Unp6", "dXNlcjpUcTgjdkxtMiF4Unp6"),
])
def test_formats_learned_from_new_dev_data_are_masked(text: str, value: str) -> None:
    assert masked(text, value)


@pytest.mark.parametrize("text", [
    "sk-ant-api02-notarealkey",  # Anthropic's prefix, too short for its key: not OpenAI's
    'const GUIDE_URL2 = "https://username:REPLACE_WITH_PASSWORD@example.org";',
    "-----BEGIN PRIVATE KEY-----\n***\n-----END PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nxxx\n-----END PRIVATE KEY-----",
    # base64 of "abcdefghijklmnopqrstuvwxyz": no key's bytes are printable text
    "-----BEGIN PRIVATE KEY-----\nYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=\n-----END PRIVATE KEY-----",
    # one-case data with capitals only at its ends (a blob's piece), not a random token
    "partOfAlongUnrelatedBlob gYnkgAkCpyh2s65zh4gjymk7q08s58nv5gawrd82tgo6rrp0jiqm09d86j0rr4tr5n"
    "5x4pvll28jd6VyZSB2",
])
def test_lookalikes_learned_from_new_dev_data_are_not_secrets(text: str) -> None:
    assert not flagged(text)


def test_a_random_mixed_case_token_is_still_a_guess() -> None:
    token = "q8ZtR2mXw7LbV4nKc9HsYd3FgJ6pTa1E"  # capitals all along, 32 characters
    assert masked(f"value {token} end", token)
    long = token + "Xb5Nw" + token[::-1]  # 69 characters, still mixed all along
    assert masked(f"blob {long}", long)


# ---- ordinary code (bench/real_code.py): names of secrets in code are not secrets -------------
@pytest.mark.parametrize("text", [
    "basic feasible solution.",
    '"""Attaches HTTP Basic Authentication to the given Request object."""',
    "_request_auth: Optional[Dict[StrictStr, Any]] = None,",
    "_auth_settings: List[str] = [",
    "private_key: CertificateIssuerPrivateKeyTypes,",
    "auth: AuthStorage | None = None,",
    "include_password: bool, default True",
    "def update_token_expiry(self, token: OAuthToken) -> None:",
    "token = token[1:-1]",
    "try_refresh_token=try_refresh_token).load_and_set(client_configuration)",
    ":param token: GitHub personal API token.",
    "api_key: The API key for the Cloudflare Workers AI API.",
    "check_credentials: Function that verifies credentials.",
    'print(f"password={password!r}")',
    'connect_header += f"Proxy-Authorization: Basic {encoded_str}\\r\\n"',
    "headers['Authorization'] = 'Bearer %s' % token",
    'prep.headers["Authorization"] = _digest_auth',
    "Auth = httpx2.Auth",
    'if getenv("TQDM_SLACK_TOKEN") and getenv("TQDM_SLACK_CHANNEL"):',
    'elif qop == "auth" or "auth" in qop.split(","):',
    "# keep the objects untouched. We pass `ensure_native_byte_order=False`",
    'token_placement="header",',
    'auth_params["prompt"] = "consent"',
    "'token', 'triple', 'true', 'trunc', 'type',",
    'Token: "#ddd0c0",',
    ".. _`Bearer Token`: https://tools.ietf.org/html/rfc6750",
    'PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"',
    'api_auth = "/v1/auth/{mount_point}/config/identity".format(',
    # web pages' styles and scripts
    ".sk-global label.sk-toggleable__label-arrow:hover:before {",  # a CSS class, not sk-...
    ".multi-token:hover::after {",
    "switch(e.keyCode){case 0:e.key===`UIKeyInputUpArrow`?o.key=t?r.C0.ESC+`OA`:r.C0.ESC",
    "t._key=[1518500249,1859775393,2400959708,3395469782],e?(t._h=e._h.slice(0)",
])
def test_code_that_names_a_secret_is_not_one(text: str) -> None:
    assert not flagged(text)


@pytest.mark.parametrize(("text", "value"), [
    (f"password: {PW}", PW),  # YAML: a literal after the key
    ("aws_secret_access_key: value with quotes and spaces", "value with quotes and spaces"),
    ('BOOTSTRAP_TOKEN: "be8dfd.da8a689a46edc282"', "be8dfd.da8a689a46edc282"),  # dotted, not a name
    ('<add key="ClearTextPassword" value="TestSource%Password%" />', "TestSource"),
    (f'token = "{B62}"  # type: str', B62),
    (f"DB_PASSWORD=Hunter2Secret{PW}", "Hunter2Secret"),
    ("OPENAI_API_KEY=sk-proj-Zq8RtX2mWb7LcV4nKs9HdY3FgJ6pTa1Eh5Uk", "sk-proj-Zq8RtX2mWb7L"),
    ('signing_key = "' + B62 + '"', B62),
])
def test_values_in_code_and_config_are_still_secrets(text: str, value: str) -> None:
    assert masked(text, value)
