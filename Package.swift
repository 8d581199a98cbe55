// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "haven",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "HavenCore", targets: ["HavenCore"]),
        .executable(name: "haven", targets: ["haven"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // Optimised in every configuration, like HavenKDF: scrypt's and the ciphers' vector code is far slower unoptimised.
        .target(name: "CHavenShims", cSettings: [.unsafeFlags(["-O2"])]),
        // scrypt's Salsa20/8 mixing, optimised in every configuration: debug builds of it are ~30× slower
        // and every test that derives a key would pay for that.
        .target(name: "HavenKDF", dependencies: ["CHavenShims"], swiftSettings: [.unsafeFlags(["-O"])]),
        // The engine: repository format, archiver, restorer, check, prune, local storage. No server stack.
        .target(
            name: "HavenCore",
            dependencies: [
                "CZstd",
                "CHavenShims",
                "HavenKDF",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "HavenStorageS3",
            dependencies: [
                "HavenCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(name: "HavenStorageSFTP", dependencies: ["HavenCore"]),
        // Repository URL → storage (local, s3:, sftp:), with the retry and rate-limit decorators applied.
        .target(name: "HavenBackends", dependencies: ["HavenCore", "HavenStorageS3", "HavenStorageSFTP"]),
        // The daemon's model: config, schedules, queue, state in SQLite, job runner, hooks, watcher.
        .target(
            name: "HavenDaemon",
            dependencies: [
                "HavenCore",
                "HavenBackends",
                .product(name: "Yams", package: "Yams"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The daemon's HTTP API.
        .target(
            name: "HavenServer",
            dependencies: [
                "HavenDaemon",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "haven",
            dependencies: [
                "HavenCore",
                "CHavenShims",
                "HavenBackends",
                "HavenDaemon",
                "HavenServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .target(name: "HavenTestSupport", dependencies: ["HavenCore"]),
        .testTarget(
            name: "HavenCoreTests",
            dependencies: [
                "HavenCore", "HavenTestSupport", "HavenKDF",
                // BoringSSL's scrypt, the reference Haven's own is checked against.
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .testTarget(name: "HavenStorageS3Tests", dependencies: ["HavenStorageS3", "HavenCore", "HavenTestSupport"]),
        .testTarget(name: "HavenStorageSFTPTests", dependencies: ["HavenStorageSFTP", "HavenCore", "HavenTestSupport"]),
        .testTarget(name: "HavenDaemonTests", dependencies: ["HavenDaemon", "HavenCore", "HavenTestSupport"]),
        .testTarget(
            name: "HavenCLITests",
            dependencies: [
                "HavenCore", "HavenTestSupport", "HavenDaemon",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(
            name: "HavenServerTests",
            dependencies: [
                "HavenServer",
                "HavenDaemon",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
