import Foundation
import HavenCore
@testable import HavenStorageS3
import HavenTestSupport
import Testing

@Suite("S3 signing, locations and credentials")
struct S3UnitTests {
    /// The "GET object" example of AWS's S3 Signature Version 4 documentation (header-based authentication).
    @Test("SigV4 matches AWS's published GET object example")
    func awsExample() {
        let creds = S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
        #expect(SigV4.amzDate(date) == "20130524T000000Z")
        let headers = SigV4.sign(method: "GET", uriPath: "/test.txt", query: [],
                                 headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")],
                                 payloadHash: SigV4.emptyPayloadHash, credentials: creds, region: "us-east-1", date: date)
        let auth = headers.first { $0.0 == "Authorization" }?.1
        #expect(auth == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        let creq = SigV4.canonicalRequest(method: "GET", uriPath: "/test.txt", query: [],
                                          headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
                                                    ("x-amz-content-sha256", SigV4.emptyPayloadHash), ("x-amz-date", "20130524T000000Z")],
                                          payloadHash: SigV4.emptyPayloadHash)
        #expect(creq == """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
    }

    @Test("session tokens are signed as x-amz-security-token")
    func sessionToken() {
        let creds = S3Credentials(accessKeyID: "a", secretAccessKey: "b", sessionToken: "tok")
        let headers = SigV4.sign(method: "PUT", uriPath: "/b/k", query: [], headers: [("host", "h")],
                                 payloadHash: SigV4.emptyPayloadHash, credentials: creds, region: "eu-west-1", date: Date())
        #expect(headers.contains { $0 == ("x-amz-security-token", "tok") })
        let auth = headers.first { $0.0 == "Authorization" }!.1
        #expect(auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"))
        #expect(auth.contains("/eu-west-1/s3/aws4_request"))
    }

    @Test("URI and query encoding")
    func encoding() {
        #expect(SigV4.uriEncode("AZaz09-_.~") == "AZaz09-_.~")
        #expect(SigV4.uriEncode("a b/c+d=é") == "a%20b%2Fc%2Bd%3D%C3%A9")
        #expect(SigV4.canonicalQuery([("prefix", "data/"), ("list-type", "2"), ("continuation-token", "a+b=")])
                == "continuation-token=a%2Bb%3D&list-type=2&prefix=data%2F")
        #expect(SigV4.canonicalQuery([("uploads", "")]) == "uploads=")
        let loc = S3Location(scheme: "http", host: "h", port: 9000, bucket: "bk", prefix: "my dir/x")
        #expect(loc.uriPath(key: loc.key("data/ab/abcd")) == "/bk/my%20dir/x/data/ab/abcd")
        #expect(loc.hostHeader == "h:9000")
        var virtual = loc
        virtual.pathStyle = false
        #expect(virtual.uriPath(key: "k/l") == "/k/l")
        #expect(virtual.hostHeader == "bk.h:9000")
    }

    @Test("restic's s3: location forms")
    func parse() throws {
        let a = try S3Location.parse("s3:https://minio.example.com:9000/bucket/some/prefix/", environment: [:])
        #expect(a == S3Location(scheme: "https", host: "minio.example.com", port: 9000, bucket: "bucket", prefix: "some/prefix"))
        let b = try S3Location.parse("s3:http://127.0.0.1:8333/b", environment: ["AWS_DEFAULT_REGION": "eu-central-1"])
        #expect(b.scheme == "http" && b.port == 8333 && b.bucket == "b" && b.prefix == "" && b.region == "eu-central-1")
        #expect(b.description == "s3:http://127.0.0.1:8333/b")
        let c = try S3Location.parse("s3:s3.amazonaws.com/bucket/repo", environment: [:])
        #expect(c.scheme == "https" && c.host == "s3.amazonaws.com" && c.port == nil && c.bucket == "bucket" && c.prefix == "repo")
        #expect(c.hostHeader == "s3.amazonaws.com" && c.region == "us-east-1")
        for bad in ["s3:", "s3:https://host", "s3:https://host/", "s3:ftp://host/b", "b2:bucket", "s3:https://host:notaport/b", "s3:https://:9000/b"] {
            do {
                _ = try S3Location.parse(bad, environment: [:])
                Issue.record("\(bad) parsed")
            } catch let e as HavenError {
                #expect(e.code == .usage, "\(bad)")
                #expect(e.message.contains(bad), "\(bad): \(e.message)")
            }
        }
    }

    @Test("credentials from environment variables and the shared credentials file")
    func credentials() throws {
        let env = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "t"])
        #expect(env == S3Credentials(accessKeyID: "id", secretAccessKey: "secret", sessionToken: "t"))

        let dir = TempDir("haven-s3-creds")
        defer { withExtendedLifetime(dir) {} }
        let file = dir.sub("credentials")
        try Fixture.write(file, Array("""
            # comment
            [default]
            aws_access_key_id = DEFAULTID
            aws_secret_access_key=defaultsecret

            [profile other]
            AWS_ACCESS_KEY_ID = OTHERID
            aws_secret_access_key = othersecret
            aws_session_token = othertoken
            """.utf8))
        #expect(try S3Credentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": file])
                == S3Credentials(accessKeyID: "DEFAULTID", secretAccessKey: "defaultsecret"))
        #expect(try S3Credentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "other"])
                == S3Credentials(accessKeyID: "OTHERID", secretAccessKey: "othersecret", sessionToken: "othertoken"))
        for env in [["AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "missing"], ["HOME": dir.path], ["AWS_ACCESS_KEY_ID": "x", "HOME": dir.path]] {
            do {
                _ = try S3Credentials.fromEnvironment(env)
                Issue.record("credentials found for \(env)")
            } catch let e as HavenError {
                #expect(e.code == .usage)
                #expect(e.message.contains("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "\(e.message)")
            }
        }
    }

    @Test("the XML scanner reads list results and error documents")
    func xml() {
        let list = """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>2</KeyCount>
            <Contents><Key>data/ab/a&amp;b</Key><Size>12</Size><ETag>&quot;x&quot;</ETag></Contents>
            <Contents><Key>data/cd/c</Key><LastModified>2020</LastModified><Size>0</Size></Contents>
            <IsTruncated>true</IsTruncated><NextContinuationToken>tok/+=</NextContinuationToken><Prefix/></ListBucketResult>
            """
        let blocks = S3XML.blocks("Contents", in: list)
        #expect(blocks.count == 2)
        #expect(blocks.map { S3XML.values("Key", in: $0) } == [["data/ab/a&b"], ["data/cd/c"]])
        #expect(blocks.map { S3XML.values("Size", in: $0) } == [["12"], ["0"]])
        #expect(S3XML.first("IsTruncated", in: list) == "true")
        #expect(S3XML.first("NextContinuationToken", in: list) == "tok/+=")
        #expect(S3XML.first("Prefix", in: list) == "")
        #expect(S3XML.first("Key", in: "<KeyCount>3</KeyCount>") == nil)
        #expect(S3XML.decode("&#65;&#x42;&lt;&unknown;") == "AB<&unknown;")
    }
}
