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
    ],
    targets: [
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(name: "CHavenShims"),
        .target(
            name: "HavenCore",
            dependencies: [
                "CZstd",
                "CHavenShims",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "haven",
            dependencies: [
                "HavenCore",
                "HavenStorageS3",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(name: "HavenTestSupport", dependencies: ["HavenCore"]),
        .target(
            name: "HavenStorageS3",
            dependencies: [
                "HavenCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(name: "HavenStorageS3Tests", dependencies: ["HavenStorageS3", "HavenCore", "HavenTestSupport"]),
        .testTarget(name: "HavenCoreTests", dependencies: ["HavenCore", "HavenTestSupport"]),
        .testTarget(name: "HavenCLITests", dependencies: ["HavenCore", "HavenTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
